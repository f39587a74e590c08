"""A local fake of the Gemini REST API, for tests of the google-genai path.

A real HTTP server (ThreadingHTTPServer on 127.0.0.1, port 0, in a daemon thread)
that answers `POST /{api_version}/models/{model}:generateContent` the way the Gemini
API does, so tests run the real google-genai client against it:

    with GeminiFake() as fake:
        fake.push(code_reply(SOURCE))                  # 200 with the code in a fenced block
        fake.push(error_reply(429, retry_after=0), code_reply(SOURCE))
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fake.base_url))
        ...
        assert len(fake.requests) == 2 and "def f(" in fake.requests[0].prompt

Replies are consumed in order, one per request; when the queue is empty the fake
answers `default` (a 500 unless a test sets it). Every request is recorded (path,
headers, JSON body, prompt text) before its reply is chosen. google-genai 3.4.0
calls `/v1/models/<model>:generateContent` (its default API version for the Gemini
API is v1) with the key in the `x-goog-api-key` header; the fake accepts any
version segment and records it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):generateContent$")


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an HTTP status, a JSON body (or raw text), extra headers,
    and a delay before anything is sent (longer than the client's timeout: a slow answer)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request the fake received."""

    method: str
    path: str
    api_version: str
    model: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The decoded JSON body (None when it was not JSON)."""

    @property
    def prompt(self) -> str:
        """The text of every part of every content of the request, joined by newlines."""
        texts = []
        contents = self.body.get("contents", []) if isinstance(self.body, dict) else []
        for content in contents:
            for part in content.get("parts", []):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
        return "\n".join(texts)

    @property
    def generation_config(self) -> dict[str, Any]:
        return self.body.get("generationConfig", {}) if isinstance(self.body, dict) else {}


def text_reply(text: str, *, finish_reason: str = "STOP", model: str = "gemini-fake-001", delay_seconds: float = 0.0) -> Reply:
    """A 200 generateContent response whose only candidate says `text`."""
    body = {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": max(1, len(text) // 4),
            "totalTokenCount": 100 + max(1, len(text) // 4),
        },
        "modelVersion": model,
        "responseId": "fake-response",
    }
    return Reply(200, body, delay_seconds=delay_seconds)


def code_reply(code: str, *, prose: bool = True, delay_seconds: float = 0.0) -> Reply:
    """A 200 answer with `code` in a ```python fenced block, with prose around it
    unless prose=False."""
    text = f"```python\n{code.rstrip()}\n```\n"
    if prose:
        text = "Here is the enhanced module.\n\n" + text + "\nIt keeps the signature and adds the POET stages.\n"
    return text_reply(text, delay_seconds=delay_seconds)


_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_reply(
    status: int,
    message: str = "",
    *,
    retry_after: float | str | None = None,
    retry_delay: str | None = None,
    delay_seconds: float = 0.0,
) -> Reply:
    """An error in the Gemini API's shape ({"error": {code, message, status}}); with
    retry_after a Retry-After header, with retry_delay (e.g. "0.1s") a RetryInfo detail."""
    error: dict[str, Any] = {
        "code": status,
        "message": message or f"fake error {status}",
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    if retry_delay is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Reply(status, {"error": error}, headers=headers, delay_seconds=delay_seconds)


class GeminiFake:
    """The fake server; a context manager (start on enter, stop on exit)."""

    def __init__(self, default: Reply | None = None):
        self.default = default or error_reply(500, "no scripted reply left")
        self._replies: deque[Reply] = deque()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting ---------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        """Queue replies, answered in order, one per request."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def requests(self) -> list[Request]:
        """The requests received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._replies)

    # --- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> GeminiFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes slow replies
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GeminiFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- serving -----------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = handler.path.split("?", 1)[0]
        match = _PATH.match(path)
        request = Request(
            method=handler.command,
            path=path,
            api_version=match["version"] if match else "",
            model=match["model"] if match else "",
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        with self._lock:
            self._requests.append(request)
            if handler.command != "POST" or match is None:
                reply = error_reply(404, f"the fake serves only POST /<version>/models/<model>:generateContent, not {handler.command} {path}")
            else:
                reply = self._replies.popleft() if self._replies else self.default
        if reply.delay_seconds and self._closing.wait(reply.delay_seconds):
            return  # shutting down
        payload = reply.body if isinstance(reply.body, (str, bytes)) else json.dumps(reply.body)
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout)
