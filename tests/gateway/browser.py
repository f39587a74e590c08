"""Headless Chromium for tests: Debian's chromium driven by puppeteer-core
(npm) through browser_driver.mjs; and a page server, whose one blank page is
reachable under two origins (http://127.0.0.1:PORT and http://localhost:PORT)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
DRIVER = Path(__file__).with_name("browser_driver.mjs")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} is missing: `python3 dev.py test` installs Debian's chromium when run as root on "
                "Debian (or: apt-get install chromium)")
    if shutil.which("node") is None:
        return "node is missing (Node.js drives the browser)"
    if not (ROOT / "node_modules" / "puppeteer-core").is_dir():
        return "puppeteer-core is missing: run `npm install` at the repository root (python3 dev.py test does)"
    return None


class BrowserError(Exception):
    """A command failed in the page (the message is the page's error)."""


class Browser:
    """One Chromium page. ``await evaluate(js)`` returns the JSON value of a JS expression (promises awaited)."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._next_id = 0
        self.version = ""

    async def __aenter__(self) -> Browser:
        self._process = await asyncio.create_subprocess_exec(
            "node", str(DRIVER), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)})
        hello = await self._answer(60)
        self.version = hello["version"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 15)
        except asyncio.TimeoutError:
            self._process.kill()
            await self._process.wait()

    async def goto(self, url: str) -> int:
        return await self._command({"op": "goto", "url": url})

    async def evaluate(self, expr: str, timeout: float = 30):
        return await self._command({"op": "eval", "expr": expr}, timeout)

    async def wait_for(self, expr: str, timeout: float = 30):
        """Polls a JS expression until it is truthy; returns its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(expr)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"still false after {timeout:g}s: {expr}")
            await asyncio.sleep(0.05)

    async def _command(self, command: dict, timeout: float = 30):
        assert self._process is not None and self._process.stdin is not None
        self._next_id += 1
        self._process.stdin.write((json.dumps({"id": self._next_id, **command}) + "\n").encode())
        await self._process.stdin.drain()
        answer = await self._answer(timeout)
        assert answer["id"] == self._next_id, answer
        if not answer["ok"]:
            raise BrowserError(answer["error"])
        return answer["value"]

    async def _answer(self, timeout: float) -> dict:
        assert self._process is not None and self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if not line:
            raise BrowserError(f"the browser driver exited ({await self._process.wait()}); see stderr")
        return json.loads(line)


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b"<!doctype html><title>page</title><p>a page on another origin</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class PageServer:
    """A blank page on 127.0.0.1:port (a thread), for pages on another origin than the API."""

    def __enter__(self) -> PageServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
