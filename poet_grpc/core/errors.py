"""The service's exception family. Pure Python: poet_grpc.api.errors maps each
class to a gRPC status with google.rpc details at the edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class PoetError(Exception):
    """Root of every error the service reports to callers on purpose."""

    reason = "POET_ERROR"
    """Stable, machine-readable cause (google.rpc.ErrorInfo.reason)."""

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(PoetError):
    """The request is malformed; nothing was changed."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None):
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}")
        if reason:
            self.reason = reason

    @classmethod
    def single(cls, field: str, description: str, *, reason: str | None = None) -> "InvalidArgument":
        return cls([FieldViolation(field, description)], reason=reason)


class NotFound(PoetError):
    """A named resource does not exist."""

    def __init__(self, resource_type: str, name: str, *, reason: str | None = None):
        self.resource_type = resource_type
        self.resource_name = name
        self.reason = reason or f"{resource_type.upper()}_NOT_FOUND"
        super().__init__(f"{resource_type} {name!r} not found", metadata={"resource": name})


class Conflict(PoetError):
    """The request conflicts with what is stored (e.g. a reused request_id)."""

    def __init__(self, message: str, *, reason: str, metadata: dict[str, str] | None = None):
        self.reason = reason
        super().__init__(message, metadata=metadata)


class Unavailable(PoetError):
    """The service cannot take the request now; retry after retry_after seconds."""

    reason = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after: float = 1.0, reason: str | None = None):
        self.retry_after = retry_after
        if reason:
            self.reason = reason
        super().__init__(message)


class Aborted(PoetError):
    """A call lost a race with a concurrent one (e.g. another enhancement of the same
    function took the version number) and stored nothing; retrying after retry_after
    seconds is expected to succeed."""

    reason = "ABORTED"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None,
                 metadata: dict[str, str] | None = None):
        self.retry_after = retry_after
        if reason:
            self.reason = reason
        super().__init__(message, metadata=metadata)


class RateLimited(PoetError):
    """The caller sent more requests than its rate allows; retry after retry_after seconds."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float, metadata: dict[str, str] | None = None):
        self.retry_after = retry_after
        super().__init__(message, metadata=metadata)


class OutOfRange(PoetError):
    """A position outside what the log holds (e.g. older than its retention);
    metadata says where to restart."""

    reason = "OUT_OF_RANGE"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        if reason:
            self.reason = reason
        super().__init__(message, metadata=metadata)


class Unauthenticated(PoetError):
    """No credential, or one that does not verify. The message never says which keys exist."""

    def __init__(self, message: str, *, reason: str):
        self.reason = reason
        super().__init__(message)


class PermissionDenied(PoetError):
    """A verified caller whose roles (or claims) do not allow the call."""

    def __init__(self, message: str, *, reason: str, metadata: dict[str, str] | None = None):
        self.reason = reason
        super().__init__(message, metadata=metadata)


@dataclass(frozen=True)
class QuotaViolation:
    subject: str
    """Whose quota, e.g. "principal:agent-7"."""
    description: str


class QuotaExceeded(PoetError):
    """The caller has used up a quota (RESOURCE_EXHAUSTED with QuotaFailure); nothing was stored."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, violations: list[QuotaViolation], metadata: dict[str, str] | None = None):
        self.violations = list(violations)
        super().__init__(message, metadata=metadata)
