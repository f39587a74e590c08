"""The audit log: one JSON line per call that reaches the server.

Written to POET_AUDIT_LOG (a file, appended to, or ``-`` for stderr) for every
method except health and probe calls, allowed or refused:

    {"time": "2026-12-02T10:00:00.123Z", "principal": "agent-7", "auth": "api_key",
     "rpc": "/poet.v1.PoetService/Enhance", "http_method": "POST", "http_path": "/api/v1/functions/enhance",
     "code": "OK", "latency_ms": 21.4, "request_id": "r-1", "correlation_id": "", "peer": "ipv4:127.0.0.1:5012",
     "forwarded_for": "10.0.0.7"}

``principal`` is null (and ``auth`` "refused") when authentication failed.
Nothing secret is written: no credential, no header values beyond those named
here, no request body (so no code).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc

from poet_grpc.core.principal import current
from poet_grpc.api.interceptors._wrap import wrap_handler

__all__ = ["AuditInterceptor", "open_audit_log"]

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/poet.v1.ProbeService/")
_CANCELLED = (asyncio.CancelledError, GeneratorExit)
"""How a call ends when its client goes away."""
_MAX_FIELD = 256
"""Longest value copied from a request into a line."""


def open_audit_log(target: str) -> logging.Logger:
    """A logger that writes bare lines to ``target`` (a path, or "-" for stderr)."""
    logger = logging.getLogger("poet_grpc.audit")
    logger.propagate = False  # audit lines never mix with the server log's format
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


def _text(value) -> str:
    return value[:_MAX_FIELD] if isinstance(value, str) else ""


class AuditInterceptor(grpc.aio.ServerInterceptor):
    """Outermost interceptor: sees every outcome, including refusals by the others."""

    def __init__(self, logger: logging.Logger):
        self._log = logger

    def _write(self, method: str, request, context: grpc.aio.ServicerContext, code: str, started: float) -> None:
        headers: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if key in ("x-envoy-original-method", "x-envoy-original-path", "x-forwarded-for", "x-correlation-id") \
                    and isinstance(value, str):
                headers.setdefault(key, value)
        principal = current()
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "principal": principal.name if principal else None,
            "auth": principal.authenticated_by if principal else "refused",
            "rpc": method,
            "http_method": _text(headers.get("x-envoy-original-method", "")),
            "http_path": _text(headers.get("x-envoy-original-path", "")).split("?", 1)[0],
            "code": code,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": _text(getattr(request, "request_id", "")),
            "correlation_id": _text(getattr(request, "correlation_id", "") or headers.get("x-correlation-id", "")),
            "peer": _text(context.peer()),
            "forwarded_for": _text(headers.get("x-forwarded-for", "")),
        }
        self._log.info(json.dumps(record, separators=(",", ":")))

    @staticmethod
    def _ending(context: grpc.aio.ServicerContext, exc: BaseException) -> str:
        """The status a call that raised exc ends with."""
        if isinstance(exc, grpc.aio.AbortError):  # the error mapping set the status
            code = context.code()
            return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        return "CANCELLED" if isinstance(exc, _CANCELLED) else "UNKNOWN"

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler

        def unary(behavior):
            async def handle(request, context):
                started = time.perf_counter()
                code = "UNKNOWN"
                try:
                    response = await behavior(request, context)
                    code = "OK"
                    return response
                except BaseException as exc:
                    code = self._ending(context, exc)
                    raise
                finally:
                    self._write(method, request, context, code, started)

            return handle

        def stream(behavior):
            async def handle(request, context):
                started = time.perf_counter()
                code = "UNKNOWN"
                try:
                    async for item in behavior(request, context):
                        yield item
                    code = "OK"
                except BaseException as exc:
                    code = self._ending(context, exc)
                    raise
                finally:
                    self._write(method, request, context, code, started)

            return handle

        return wrap_handler(handler, unary, stream)
