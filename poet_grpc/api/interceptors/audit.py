"""The audit log, and the server log's line per call.

Every call that reaches the server, except health and probe calls, allowed or
refused, leaves one INFO line in the server log (logger poet_grpc.api.requests,
"/poet.v1.PoetService/Enhance OK 21.4 ms principal=agent-7"; in JSON mode with
the fields below, and request_id, correlation_id, trace_id), and, with
POET_AUDIT_LOG (a file, appended to, or ``-`` for stderr), one JSON line in the
audit log:

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
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc

from poet_grpc.core.principal import current
from poet_grpc.api.interceptors._wrap import wrap_handler
from poet_grpc.observability import logs, tracing

__all__ = ["AuditInterceptor", "open_audit_log"]

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/poet.v1.ProbeService/")
_CANCELLED = (asyncio.CancelledError, GeneratorExit)
"""How a call ends when its client goes away."""
_MAX_FIELD = 256
"""Longest value copied from a request into a line."""
_HEADERS = ("x-envoy-original-method", "x-envoy-original-path", "x-forwarded-for", "x-correlation-id", "x-request-id")
requests_log = logging.getLogger("poet_grpc.api.requests")


def open_audit_log(target: str) -> logging.Logger:
    """A logger that writes bare lines to ``target`` (a path, or "-" for stderr)."""
    logger = logging.getLogger("poet_grpc.audit")
    logger.propagate = False  # audit lines never mix with the server log's format
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(logs.stderr())
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

    def __init__(self, logger: logging.Logger | None = None):
        """logger: the audit log (open_audit_log); None for the server log's line only."""
        self._log = logger

    @staticmethod
    def _begin(request, context: grpc.aio.ServicerContext) -> dict[str, str]:
        """The call's headers the lines need; its ids go on every line logged while it is served."""
        headers: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if key in _HEADERS and isinstance(value, str):
                headers.setdefault(key, value)
        logs.bind_request(_text(getattr(request, "request_id", "") or headers.get("x-request-id", "")),
                          _text(getattr(request, "correlation_id", "") or headers.get("x-correlation-id", "")))
        return headers

    def _write(self, method: str, request, context: grpc.aio.ServicerContext, headers: dict[str, str], code: str,
               started: float) -> None:
        if tracing.enabled():
            tracing.set_rpc_status(code, grpc.StatusCode[code].value[0])
        log_request = requests_log.isEnabledFor(logging.INFO)
        if self._log is None and not log_request:
            return
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
        if self._log is not None:
            self._log.info(json.dumps(record, separators=(",", ":")))
        if log_request:
            # request_id and correlation_id come from _begin() with every line of the call.
            fields = {k: v for k, v in record.items() if k not in ("time", "request_id", "correlation_id")}
            words = [f"{name}={record[name]}" for name in ("principal", "request_id", "correlation_id") if record[name]]
            requests_log.info(" ".join([method, code, f"{record['latency_ms']:.1f} ms", *words]), extra=fields)

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
                headers = self._begin(request, context)
                code = "UNKNOWN"
                try:
                    response = await behavior(request, context)
                    code = "OK"
                    return response
                except BaseException as exc:
                    code = self._ending(context, exc)
                    raise
                finally:
                    self._write(method, request, context, headers, code, started)

            return handle

        def stream(behavior):
            async def handle(request, context):
                started = time.perf_counter()
                headers = self._begin(request, context)
                code = "UNKNOWN"
                try:
                    async for item in behavior(request, context):
                        yield item
                    code = "OK"
                except BaseException as exc:
                    code = self._ending(context, exc)
                    raise
                finally:
                    self._write(method, request, context, headers, code, started)

            return handle

        return wrap_handler(handler, unary, stream)
