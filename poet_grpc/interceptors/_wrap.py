"""Wrapping a grpc.aio method handler's behaviour, for unary and server-streaming RPCs."""

from __future__ import annotations

import inspect
from typing import Awaitable, Callable

import grpc

UnaryBehavior = Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]


def wrap_handler(handler: grpc.RpcMethodHandler | None, unary, stream) -> grpc.RpcMethodHandler | None:
    """A handler whose unary_unary behaviour is unary(behaviour) and whose
    unary_stream behaviour is stream(behaviour). Other kinds pass through."""
    if handler is None or handler.request_streaming:
        return handler
    if handler.response_streaming:
        behavior = handler.unary_stream
        # Streaming handlers are either async generators or coroutines that
        # write through context.write (grpc.health.v1 Watch); wrap each as what it is.
        wrapped = stream(behavior) if inspect.isasyncgenfunction(behavior) else unary(behavior)
        return grpc.unary_stream_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
