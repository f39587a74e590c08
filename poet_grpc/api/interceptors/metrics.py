"""RPC metrics: each call's start, its final gRPC code, its latency, and the calls in flight.

The outermost interceptor (see server.py), so that the code counted is the one the
client gets, refusals by auth, rate limit and validation included, and the latency
is the whole call's. Calls through the REST gateway reach the server as gRPC calls
and count the same. Unary and streaming calls alike; a stream's latency is its whole
life and its messages are counted. The method labels are those of a method the
server registered; a call to any other method counts as service and method
"unknown" (it gets UNIMPLEMENTED), so no caller can add label values.
"""

from __future__ import annotations

import asyncio
import inspect
import time

import grpc

from poet_grpc.observability.metrics import MethodMetrics, Metrics

__all__ = ["MetricsInterceptor"]

_CANCELLED = (asyncio.CancelledError, GeneratorExit)
"""How a call ends when its client goes away."""


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(context: grpc.aio.ServicerContext, exc: BaseException | None = None) -> str:
    """The status a call ends with: the one set on the context (an abort, or a code set
    without raising), else OK on return, CANCELLED when the client left, UNKNOWN otherwise."""
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code.name
        return "OK" if exc is None else "UNKNOWN"
    return "CANCELLED" if isinstance(exc, _CANCELLED) else "UNKNOWN"


def _measured_coroutine(behavior, series: MethodMetrics):
    async def handle(request, context):
        series.started.inc()
        series.in_flight.inc()
        began = time.perf_counter()
        code = "UNKNOWN"
        try:
            response = await behavior(request, context)
            code = _code(context)
            return response
        except BaseException as exc:
            code = _code(context, exc)
            raise
        finally:
            series.in_flight.dec()
            series.duration.observe(time.perf_counter() - began)
            series.handled(code).inc()

    return handle


def _measured_generator(behavior, series: MethodMetrics):
    async def handle(request, context):
        series.started.inc()
        series.in_flight.inc()
        began = time.perf_counter()
        code = "UNKNOWN"
        sent = series.sent
        try:
            async for item in behavior(request, context):
                if sent is not None:
                    sent.inc()
                yield item
            code = _code(context)
        except BaseException as exc:
            code = _code(context, exc)
            raise
        finally:
            series.in_flight.dec()
            series.duration.observe(time.perf_counter() - began)
            series.handled(code).inc()

    return handle


_CONSTRUCTORS = {
    "unary": ("unary_unary", grpc.unary_unary_rpc_method_handler),
    "server_stream": ("unary_stream", grpc.unary_stream_rpc_method_handler),
    "client_stream": ("stream_unary", grpc.stream_unary_rpc_method_handler),
    "bidi_stream": ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            # No such method: grpc answers UNIMPLEMENTED without calling anything.
            series = self._metrics.method("unknown", None)
            series.started.inc()
            series.handled(grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        kind = _kind(handler)
        attribute, construct = _CONSTRUCTORS[kind]
        behavior = getattr(handler, attribute)
        if inspect.isasyncgenfunction(behavior):
            measured = _measured_generator(behavior, self._metrics.method(kind, handler_call_details.method))
        elif inspect.iscoroutinefunction(behavior):
            measured = _measured_coroutine(behavior, self._metrics.method(kind, handler_call_details.method))
        else:
            return handler  # a synchronous handler: this server registers none
        return construct(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
