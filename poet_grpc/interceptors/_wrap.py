"""Wrapping a grpc.aio method handler's behaviour, for unary and server-streaming RPCs."""

from __future__ import annotations

from typing import Awaitable, Callable

import grpc

UnaryBehavior = Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]


def wrap_handler(handler: grpc.RpcMethodHandler | None, unary, stream) -> grpc.RpcMethodHandler | None:
    """A handler whose unary_unary behaviour is unary(behaviour) and whose
    unary_stream behaviour is stream(behaviour). Other kinds pass through."""
    if handler is None or handler.request_streaming:
        return handler
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
