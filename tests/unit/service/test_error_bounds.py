"""to_rpc_status bounds every text: an error must reach the client as itself, not as
RESOURCE_EXHAUSTED because its trailers overflowed gRPC's 8 KB metadata limit."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from poet_grpc.core.errors import (
    FieldViolation, InvalidArgument, NotFound, QuotaExceeded, QuotaViolation, RateLimited, Unauthenticated,
)
from poet_grpc.api.errors import MAX_MESSAGE_BYTES, MAX_STATUS_BYTES, MAX_TEXT_BYTES, to_rpc_status

HUGE = "x" * 200_000
WIDE = "é" * 100_000  # two bytes each, and percent-encoded in grpc-message: six


def trailers_size(exc) -> tuple[int, status_pb2.Status]:
    """Bytes on the wire of the error's trailers (grpc-message percent-encoded as gRPC
    does, binary values in base64), and the decoded google.rpc.Status."""
    status = to_rpc_status(exc)
    size = len(urllib.parse.quote(status.details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")) + len("grpc-message")
    decoded = None
    for key, value in status.trailing_metadata:
        if key.endswith("-bin"):
            size += len(key) + len(base64.b64encode(value))
            decoded = status_pb2.Status.FromString(value)
        else:
            size += len(key) + len(value)
    return size, decoded


def unpacked(status: status_pb2.Status, kind):
    (detail,) = [d for d in status.details if d.Is(kind.DESCRIPTOR)]
    message = kind()
    detail.Unpack(message)
    return message


@pytest.mark.parametrize("text", [HUGE, WIDE], ids=["ascii", "non-ascii"])
def test_a_huge_description_is_cut_and_the_error_stays_itself(text: str) -> None:
    size, status = trailers_size(InvalidArgument.single("original_code", "syntax error: " + text))
    assert size < 7 * 1024
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES and status.message.endswith("...")
    (violation,) = unpacked(status, error_details_pb2.BadRequest).field_violations
    assert violation.field == "original_code"
    assert violation.description.startswith("syntax error: ") and violation.description.endswith("...")
    assert len(violation.description.encode()) <= MAX_TEXT_BYTES


def test_many_violations_keep_as_many_as_fit_and_always_the_first() -> None:
    violations = [FieldViolation(f"events[{i}].type", "must be dot-separated words " + "y" * 100) for i in range(5000)]
    size, status = trailers_size(InvalidArgument(violations))
    assert size < 7 * 1024 and status.ByteSize() <= MAX_STATUS_BYTES
    kept = unpacked(status, error_details_pb2.BadRequest).field_violations
    assert 1 <= len(kept) < 5000
    assert [v.field for v in kept] == [f"events[{i}].type" for i in range(len(kept))]
    size, status = trailers_size(InvalidArgument([FieldViolation(HUGE, HUGE), FieldViolation("b", HUGE)]))
    assert size < 7 * 1024 and len(unpacked(status, error_details_pb2.BadRequest).field_violations) >= 1


def test_metadata_resource_and_quota_texts_are_bounded_too() -> None:
    metadata = {f"key{i}" + HUGE: WIDE for i in range(100)}
    for exc in (
        RateLimited(HUGE, retry_after=2, metadata=metadata),
        NotFound("function", HUGE),
        QuotaExceeded(WIDE, violations=[QuotaViolation(HUGE, HUGE)] * 50, metadata=metadata),
        Unauthenticated(HUGE, reason="BAD_KEY" + HUGE),
    ):
        size, status = trailers_size(exc)
        assert size < 7 * 1024, type(exc).__name__
        assert status.ByteSize() <= MAX_STATUS_BYTES
        assert status.code != code_pb2.INTERNAL


def test_small_errors_are_unchanged() -> None:
    _, status = trailers_size(InvalidArgument([FieldViolation("a", "is required"), FieldViolation("b", "too long")]))
    assert status.message == "invalid request: a: is required; b: too long"
    bad = unpacked(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [("a", "is required"), ("b", "too long")]
    retry = to_rpc_status(RateLimited("slow down", retry_after=2.5, metadata={"client": "c"}))
    assert ("retry-after", "3") in retry.trailing_metadata
