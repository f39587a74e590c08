"""Wrapping a grpc.aio method handler's behaviour, for unary and server-streaming RPCs."""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

UnaryBehavior = Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]
Deserializer = Callable[[bytes], object]


class UndecodableRequest:
    """Stands in for a request whose bytes do not parse (nested deeper than
    protobuf's limit, invalid UTF-8, corrupt): grpc would answer UNKNOWN with the
    parser's text; this lets the validation interceptor refuse it instead."""

    __slots__ = ("message_type", "error")

    def __init__(self, message_type: str, error: str):
        self.message_type = message_type
        self.error = error


def tolerant(deserialize: Deserializer | None) -> Deserializer | None:
    """deserialize, returning an UndecodableRequest where it would raise."""
    if deserialize is None:
        return None
    owner = getattr(deserialize, "__self__", None)  # Message.FromString is bound to its class
    message_type = getattr(getattr(owner, "DESCRIPTOR", None), "name", "request")

    def parse(data: bytes) -> object:
        try:
            return deserialize(data)
        except (DecodeError, RecursionError) as exc:
            return UndecodableRequest(message_type, str(exc))

    return parse


def wrap_handler(handler: grpc.RpcMethodHandler | None, unary, stream, *,
                 deserializer: Callable[[Deserializer | None], Deserializer | None] | None = None
                 ) -> grpc.RpcMethodHandler | None:
    """A handler whose unary_unary behaviour is unary(behaviour) and whose
    unary_stream behaviour is stream(behaviour), and whose request deserializer
    is deserializer(the handler's), when given. Other kinds pass through."""
    if handler is None or handler.request_streaming:
        return handler
    request_deserializer = handler.request_deserializer
    if deserializer is not None:
        request_deserializer = deserializer(request_deserializer)
    if handler.response_streaming:
        behavior = handler.unary_stream
        # Streaming handlers are either async generators or coroutines that
        # write through context.write (grpc.health.v1 Watch); wrap each as what it is.
        wrapped = stream(behavior) if inspect.isasyncgenfunction(behavior) else unary(behavior)
        return grpc.unary_stream_rpc_method_handler(
            wrapped,
            request_deserializer=request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary(handler.unary_unary),
        request_deserializer=request_deserializer,
        response_serializer=handler.response_serializer,
    )


def check_first(handler: grpc.RpcMethodHandler | None, check: Callable[[object, grpc.aio.ServicerContext], None],
                *, deserializer: Callable[[Deserializer | None], Deserializer | None] | None = None
                ) -> grpc.RpcMethodHandler | None:
    """A handler that runs check(request, context) before each call's behaviour:
    an exception it raises refuses the call before the behaviour starts."""

    def unary(behavior):
        async def handle(request, context):
            check(request, context)
            return await behavior(request, context)

        return handle

    def stream(behavior):
        async def handle(request, context):
            check(request, context)
            async for item in behavior(request, context):
                yield item

        return handle

    return wrap_handler(handler, unary, stream, deserializer=deserializer)
