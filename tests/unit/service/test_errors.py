from google.rpc import code_pb2, error_details_pb2, status_pb2

from poet_grpc.core.errors import Conflict, FieldViolation, InvalidArgument, NotFound, Unavailable
from poet_grpc.api.errors import to_rpc_status


def decode(exc):
    status = to_rpc_status(exc)
    (key, raw), = [(k, v) for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    decoded = status_pb2.Status.FromString(raw)
    found = {}
    for detail in decoded.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo, error_details_pb2.ResourceInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return decoded, found


def test_invalid_argument_lists_every_violation():
    decoded, found = decode(InvalidArgument([FieldViolation("a", "is required"), FieldViolation("b.c", "too long")]))
    assert decoded.code == code_pb2.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in found["BadRequest"].field_violations] == [("a", "is required"), ("b.c", "too long")]
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT" and found["ErrorInfo"].domain == "poet.v1"


def test_not_found_conflict_unavailable():
    decoded, found = decode(NotFound("version", "f/v3"))
    assert decoded.code == code_pb2.NOT_FOUND
    assert found["ErrorInfo"].reason == "VERSION_NOT_FOUND"
    assert found["ResourceInfo"].resource_name == "f/v3"
    decoded, found = decode(Conflict("reused", reason="REQUEST_ID_REUSED", metadata={"request_id": "r"}))
    assert decoded.code == code_pb2.ALREADY_EXISTS and found["ErrorInfo"].metadata["request_id"] == "r"
    decoded, found = decode(Unavailable("busy", retry_after=2.5))
    assert decoded.code == code_pb2.UNAVAILABLE
    assert found["RetryInfo"].retry_delay.ToMilliseconds() == 2500


def test_unexpected_exceptions_become_internal_without_a_trace():
    decoded, found = decode(ZeroDivisionError("secret detail"))
    assert decoded.code == code_pb2.INTERNAL
    assert "secret" not in decoded.message and "Traceback" not in decoded.message
    assert found["ErrorInfo"].reason == "INTERNAL"


def test_aborted_is_retryable_with_retry_info_and_a_retry_after_header():
    from poet_grpc.core.enhancement import ConcurrentEnhancement

    exc = ConcurrentEnhancement("mypkg.text.first", "lost the version number")
    assert 0.1 <= exc.retry_after <= 1.0
    decoded, found = decode(exc)
    assert decoded.code == code_pb2.ABORTED
    assert found["ErrorInfo"].reason == "CONCURRENT_ENHANCEMENT"
    assert found["ErrorInfo"].metadata["function_name"] == "mypkg.text.first"
    assert found["RetryInfo"].retry_delay.ToMilliseconds() == int(exc.retry_after * 1000)
    assert ("retry-after", "1") in to_rpc_status(exc).trailing_metadata  # whole seconds, rounded up
