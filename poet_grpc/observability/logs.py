"""The server log: text for a terminal, or one JSON object per line for a collector.

    configure("INFO", "json")

Text (the default) is what `serve` always printed: its own lines bare
("poet-grpc: gRPC listening on ..."; on stdout, warnings and errors on stderr),
everything else as "<time> <LEVEL> <logger>: <message>" on stderr.

JSON puts every line on stderr as an object with time, level, logger, message,
request_id, correlation_id, trace_id and span_id (empty when not known), plus
the fields a record carries (the per-request line: rpc, code, latency_ms,
principal, peer...). With capture_output, whatever bypasses logging (C
libraries, child processes, a stray print) is read back from the process's
stdout and stderr and logged as such lines too (logger "poet_grpc.output").

Either way, a redaction filter replaces what looks like a credential (bearer
tokens, JWTs, API keys in URLs and key=value text, and the values given as
`secrets`) with "[REDACTED]", as a safety net: nothing should log one.

The level is a level name, optionally followed by logger=LEVEL pairs:
"DEBUG,httpx=DEBUG". It applies to POET's loggers; other libraries stay at
INFO or above, and the chatty ones (NOISY) at WARNING, unless named.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import re
import sys
import threading
from datetime import datetime, timezone
from typing import Iterable, TextIO

from pythonjsonlogger.json import JsonFormatter

from poet_grpc.observability import tracing

__all__ = ["FORMATS", "NOISY", "bind_request", "configure", "console", "parse_level", "redact", "stderr"]

FORMATS = ("text", "json")
NOISY = ("asyncio", "bandit", "google_genai", "grpc", "h2", "hpack", "httpcore", "httpx", "httpx2", "stevedore",
         "urllib3")
"""Libraries whose DEBUG and INFO lines drown the server's own (grpc's event engine,
the Gemini client's HTTP requests and frames, bandit's plugin loading)."""

console = logging.getLogger("poet_grpc.console")
"""What `serve` tells its operator (where it listens, which sandbox, warnings,
stopping): shown at any log level; in text mode as "poet-grpc: <message>"."""

_REDACTED = "[REDACTED]"
_PATTERNS = re.compile(
    r"(?P<bearer>\bbearer\s+)[^\s\"',;]+"
    r"|\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"  # a JWT: base64url JSON header, payload, signature
    r"|\bAIza[\w-]{30,}"  # a Google API key
    r"|(?P<key>\b(?:authorization|x-goog-api-key|api[-_]?key|key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic)\s+)?[^\s\"',;&]+",
    re.IGNORECASE,
)
_CLUES = ("bearer", "basic", "eyj", "aiza", "key", "token", "secret", "password", "authorization")
"""What every text _PATTERNS matches contains: most lines have none, and skip the regex."""
_secrets: tuple[str, ...] = ()
_request: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("poet_log_request", default=("", ""))
_installed: list[tuple[logging.Logger, logging.Handler]] = []
_stderr: TextIO | None = None
"""The process's real stderr while capture_output redirects fd 2."""
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def bind_request(request_id: str, correlation_id: str) -> None:
    """The ids of the call being served, for every line logged while serving it."""
    _request.set((request_id, correlation_id))


def stderr() -> TextIO:
    """Where stderr lines belong: the real stderr, also while output is captured."""
    return _stderr or sys.stderr


def redact(text: str) -> str:
    """text with the given secrets, and what looks like a credential, replaced by [REDACTED]."""
    for secret in _secrets:
        text = text.replace(secret, _REDACTED)
    lowered = text.lower()
    if not any(clue in lowered for clue in _CLUES):
        return text
    return _PATTERNS.sub(_replace, text)


def _replace(match: re.Match) -> str:
    return (match["bearer"] or match["key"] or "") + _REDACTED


def parse_level(spec: str) -> tuple[int, dict[str, int]]:
    """(POET's level, {logger: level}) from "LEVEL[,logger=LEVEL...]"; ValueError if malformed."""
    level, named = None, {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.rpartition("=")
        number = logging.getLevelName(value.strip().upper())
        if not isinstance(number, int) or (sep and not name.strip()):
            raise ValueError(f"log_level: {part!r} is not LEVEL or logger=LEVEL (DEBUG, INFO, WARNING, ERROR)")
        if sep:
            named[name.strip()] = number
        elif level is None:
            level = number
        else:
            raise ValueError(f"log_level: {spec!r} names more than one level for the server")
    return (logging.INFO if level is None else level), named


class _Context(logging.Filter):
    """Adds the ids of the current call and span to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id, correlation_id = _request.get()
        trace_id, span_id = tracing.current_ids()
        for name, value in (("request_id", request_id), ("correlation_id", correlation_id), ("trace_id", trace_id),
                            ("span_id", span_id)):
            if not getattr(record, name, ""):
                setattr(record, name, value)
        return True


class _Redact(logging.Filter):
    _exceptions = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            # Formatted once here, so every formatter prints the redacted text.
            record.exc_text = redact(self._exceptions.formatException(record.exc_info))
            record.exc_info = None
        fields = record.__dict__
        for name in fields.keys() - _STANDARD:  # what the record carries beyond logging's own
            if fields[name] and isinstance(fields[name], str):
                fields[name] = redact(fields[name])
        return True


class _Json(JsonFormatter):
    def __init__(self):
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(request_id)s %(correlation_id)s %(trace_id)s %(span_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def add_fields(self, log_data, record, message_dict) -> None:
        when = datetime.fromtimestamp(record.created, timezone.utc)
        log_data["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)


class _Console(logging.Formatter):
    """serve's own lines as it always printed them."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = "poet-grpc: WARNING: " if record.levelno == logging.WARNING else "poet-grpc: "
        text = prefix + record.getMessage()
        return f"{text}\n{record.exc_text}" if record.exc_text else text


class _Std(logging.StreamHandler):
    """A handler writing to sys.stdout or sys.stderr as they are when it writes."""

    def __init__(self, name: str):
        self._stream_name = name  # not _name: logging.Handler's own
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(level: str = "INFO", format: str = "text", *, secrets: Iterable[str] = (),
              capture_output: bool = False) -> None:
    """Set up the process's logging (again: replacing what an earlier call set).
    ValueError for an unknown format or a malformed level."""
    global _secrets, _stderr
    if format not in FORMATS:
        raise ValueError(f"log_format must be text or json, not {format!r}")
    poet_level, named = parse_level(level)
    _secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))
    for logger, handler in _installed:
        logger.removeHandler(handler)
    _installed.clear()

    if format == "json":
        if capture_output and _stderr is None:
            _stderr = _capture_output()
        main = logging.StreamHandler(stderr())
        main.setFormatter(_Json())
        console_handlers = [main]
    else:
        main = logging.StreamHandler(sys.stderr)
        main.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        out, err = _Std("stdout"), _Std("stderr")
        out.addFilter(lambda record: record.levelno < logging.WARNING)
        err.setLevel(logging.WARNING)
        console_handlers = [out, err]
        for handler in console_handlers:
            handler.setFormatter(_Console())
    for handler in {main, *console_handlers}:
        handler.addFilter(_Context())
        handler.addFilter(_Redact())
    logging.captureWarnings(format == "json")  # else Python prints them bare on stderr

    root = logging.getLogger()
    root.addHandler(main)
    _installed.append((root, main))
    for handler in console_handlers:
        console.addHandler(handler)
        _installed.append((console, handler))
    console.propagate = False
    console.setLevel(logging.INFO)

    # Other libraries: never DEBUG, the noisy ones WARNING and above, unless named.
    root.setLevel(max(poet_level, logging.INFO))
    logging.getLogger("poet_grpc").setLevel(poet_level)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(poet_level, logging.WARNING))
    for name, number in named.items():
        logging.getLogger(name).setLevel(number)


def _capture_output() -> TextIO:
    """Point fds 1 and 2 at a pipe whose lines are logged; returns the real stderr.
    Child processes inherit the pipe, so their stray output is logged too."""
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    saved = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_log_lines, args=(read_end,), name="poet-log-output", daemon=True)
    reader.start()

    def restore() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        reader.join(timeout=1)  # a child still holding the pipe keeps it open: do not wait for it

    atexit.register(restore)
    return real


def _log_lines(fd: int) -> None:
    output = logging.getLogger("poet_grpc.output")
    with open(fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                output.warning("%s", line)
