"""Local HTTP receivers for the integration tests: they record every request and
answer from a script (e.g. fail twice, then recover).

    with Receiver() as r:
        r.script(500, 500)        # the next two requests fail, later ones get r.default
        ... r.url ... r.requests ...
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"status": "success"})
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    headers: dict[str, str]
    at: float
    status: int
    """What the receiver answered."""


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default = Reply()
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver._lock:
                    reply = receiver._script.pop(0) if receiver._script else receiver.default
                    receiver.requests.append(Received(self.path, body, dict(self.headers), time.monotonic(), reply.status))
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def script(self, *replies: int | Reply) -> None:
        """Answer the next requests with these (statuses or Replies), then with default."""
        with self._lock:
            self._script.extend(r if isinstance(r, Reply) else Reply(r, {"error": f"scripted {r}"}) for r in replies)

    def fail_always(self, status: int = 503) -> None:
        self.default = Reply(status, {"error": "down"})

    def recover(self) -> None:
        self.default = Reply()

    def delivered(self) -> list[Received]:
        """The requests answered with 2xx."""
        return [r for r in list(self.requests) if 200 <= r.status < 300]

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
