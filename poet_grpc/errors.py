"""Maps the exception family in poet_grpc.core.errors to google.rpc.Status.

Every RPC error leaves the server as a status code, a one-line message and
typed details (ErrorInfo always; BadRequest for invalid input; RetryInfo when
the caller should come back later). Unexpected exceptions become INTERNAL
with no stack trace; the trace goes to the server log only.
"""

from __future__ import annotations

import collections
import logging
import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from poet_grpc.core.errors import Conflict, InvalidArgument, NotFound, OutOfRange, PoetError, RateLimited, Unavailable

ERROR_DOMAIN = "poet.v1"
log = logging.getLogger(__name__)


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _code_for(exc: PoetError) -> int:
    if isinstance(exc, InvalidArgument):
        return code_pb2.INVALID_ARGUMENT
    if isinstance(exc, NotFound):
        return code_pb2.NOT_FOUND
    if isinstance(exc, Conflict):
        return code_pb2.ALREADY_EXISTS
    if isinstance(exc, Unavailable):
        return code_pb2.UNAVAILABLE
    if isinstance(exc, RateLimited):
        return code_pb2.RESOURCE_EXHAUSTED
    if isinstance(exc, OutOfRange):
        return code_pb2.OUT_OF_RANGE
    return code_pb2.FAILED_PRECONDITION


def to_rpc_status(exc: BaseException) -> grpc.Status:
    """The grpc.Status (with google.rpc details in trailers) for an exception."""
    if not isinstance(exc, PoetError):
        log.exception("unexpected error", exc_info=exc)
        info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see server log", details=[_pack(info)])
        return rpc_status.to_status(status)
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata)
    details = [_pack(info)]
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        details.append(_pack(bad))
    if isinstance(exc, NotFound):
        details.append(
            _pack(error_details_pb2.ResourceInfo(resource_type=exc.resource_type, resource_name=exc.resource_name))
        )
    if isinstance(exc, (Unavailable, RateLimited)):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        # Also as a retry-after header: the REST gateway passes it on to HTTP clients.
        status = rpc_status.to_status(status_pb2.Status(code=_code_for(exc), message=exc.message, details=details))
        return _WithMetadata(status.code, status.details,
                             (*status.trailing_metadata, ("retry-after", str(max(1, math.ceil(exc.retry_after))))))
    return rpc_status.to_status(status_pb2.Status(code=_code_for(exc), message=exc.message, details=details))


class _WithMetadata(collections.namedtuple("_WithMetadata", ("code", "details", "trailing_metadata")), grpc.Status):
    """A grpc.Status with extra trailing metadata."""
