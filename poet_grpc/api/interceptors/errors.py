"""Turns every exception escaping a handler into a gRPC status with details."""

from __future__ import annotations

import grpc

from poet_grpc.api.errors import to_rpc_status
from poet_grpc.api.interceptors._wrap import wrap_handler


def _unary(behavior):
    async def handle(request, context: grpc.aio.ServicerContext):
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
            await context.abort_with_status(to_rpc_status(exc))

    return handle


def _stream(behavior):
    async def handle(request, context: grpc.aio.ServicerContext):
        try:
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await context.abort_with_status(to_rpc_status(exc))

    return handle


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        return wrap_handler(await continuation(handler_call_details), _unary, _stream)
