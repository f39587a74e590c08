"""Maps the exception family in poet_grpc.core.errors to google.rpc.Status.

Every RPC error leaves the server as a status code, a one-line message and
typed details (ErrorInfo always; BadRequest for invalid input; RetryInfo when
the caller should come back later: UNAVAILABLE, RESOURCE_EXHAUSTED by the rate
limit, ABORTED by a concurrent call). Unexpected exceptions become INTERNAL
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

from poet_grpc.core.errors import (
    Aborted, Conflict, InvalidArgument, NotFound, OutOfRange, PermissionDenied, PoetError, QuotaExceeded, RateLimited,
    Unauthenticated, Unavailable,
)

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
    if isinstance(exc, Aborted):
        return code_pb2.ABORTED
    if isinstance(exc, (RateLimited, QuotaExceeded)):
        return code_pb2.RESOURCE_EXHAUSTED
    if isinstance(exc, Unauthenticated):
        return code_pb2.UNAUTHENTICATED
    if isinstance(exc, PermissionDenied):
        return code_pb2.PERMISSION_DENIED
    if isinstance(exc, OutOfRange):
        return code_pb2.OUT_OF_RANGE
    return code_pb2.FAILED_PRECONDITION


MAX_MESSAGE_BYTES = 1024
MAX_TEXT_BYTES = 1024
"""Largest field violation or quota description, in bytes of UTF-8."""
MAX_STATUS_BYTES = 2560
"""Largest serialized google.rpc.Status (message included). An error travels in
trailers: grpc-message (percent-encoded, so up to 3 KB for a 1 KB message) and
grpc-status-details-bin (base64: 3.4 KB for this). gRPC clients refuse trailers
over 8 KB by default (RESOURCE_EXHAUSTED instead of the error; Envoy: 502)."""


def _clip(text: str, limit: int) -> str:
    """text cut to at most limit bytes of UTF-8, at a character boundary, "..." marking the cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def to_rpc_status(exc: BaseException) -> grpc.Status:
    """The grpc.Status (with google.rpc details in trailers) for an exception.
    Texts are cut to the MAX_* bounds; field violations that do not fit in
    MAX_STATUS_BYTES are left out (the first always stays)."""
    if not isinstance(exc, PoetError):
        log.exception("unexpected error", exc_info=exc)
        info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)
        status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see server log", details=[_pack(info)])
        return rpc_status.to_status(status)
    for scale in (1, 4):  # a second pass with a quarter of each bound when the first does not fit
        status = _status(exc, scale)
        if status.ByteSize() <= MAX_STATUS_BYTES:
            break
    headers = _headers(exc)
    grpc_status = rpc_status.to_status(status)
    if not headers:
        return grpc_status
    return _WithMetadata(grpc_status.code, grpc_status.details, (*grpc_status.trailing_metadata, *headers))


def _headers(exc: PoetError) -> list[tuple[str, str]]:
    """Trailing metadata beside the status; the REST gateway passes it on as HTTP headers."""
    if isinstance(exc, Unauthenticated):
        return [("www-authenticate", "Bearer")]  # RFC 6750: a 401 names the scheme
    if isinstance(exc, (Unavailable, RateLimited, Aborted)):
        return [("retry-after", str(max(1, math.ceil(exc.retry_after))))]  # also in RetryInfo
    return []


def _status(exc: PoetError, scale: int) -> status_pb2.Status:
    """The google.rpc.Status of exc, its texts within the bounds divided by scale."""
    text, short = MAX_TEXT_BYTES // scale, 256 // scale
    metadata = {_clip(k, 64): _clip(v, short) for k, v in list(exc.metadata.items())[:16 // scale]}
    info = error_details_pb2.ErrorInfo(reason=_clip(exc.reason, 128), domain=ERROR_DOMAIN, metadata=metadata)
    status = status_pb2.Status(code=_code_for(exc), message=_clip(exc.message, MAX_MESSAGE_BYTES // scale),
                               details=[_pack(info)])
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest()
        for v in exc.violations:
            bad.field_violations.add(field=_clip(v.field, short), description=_clip(v.description, text))
            if len(bad.field_violations) > 1 and status.ByteSize() + bad.ByteSize() + 64 > MAX_STATUS_BYTES:
                del bad.field_violations[-1]  # the rest do not fit; the message lists them, cut
                break
        status.details.append(_pack(bad))
    if isinstance(exc, NotFound):
        status.details.append(_pack(error_details_pb2.ResourceInfo(
            resource_type=_clip(exc.resource_type, short), resource_name=_clip(exc.resource_name, short))))
    if isinstance(exc, QuotaExceeded):
        status.details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=_clip(v.subject, short), description=_clip(v.description, text))
            for v in exc.violations[:8 // scale]
        ])))
    if isinstance(exc, (Unavailable, RateLimited, Aborted)):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(exc.retry_after * 1000))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status


class _WithMetadata(collections.namedtuple("_WithMetadata", ("code", "details", "trailing_metadata")), grpc.Status):
    """A grpc.Status with extra trailing metadata."""
