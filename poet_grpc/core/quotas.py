"""Storage quotas per caller: functions created, versions per function, bytes of code.

Checked and charged in the store transaction that records a version, so
concurrent calls cannot overshoot and a refused call stores nothing. The
learning loop's regenerations are the service's doing: they are charged to
their own caller, which only the versions-per-function limit applies to (it
bounds how far feedback alone can grow a function).
"""

from __future__ import annotations

from dataclasses import dataclass

from poet_grpc.core.errors import QuotaExceeded, QuotaViolation
from poet_grpc.store import Store


@dataclass(frozen=True)
class Quotas:
    """Limits per caller (POET_QUOTA_* settings); 0 means unlimited."""

    functions: int = 1000
    """Functions one caller may create."""
    versions_per_function: int = 100
    """Versions of one function one caller may store."""
    bytes: int = 256 * 1024 * 1024
    """Bytes of code (source plus generated) one caller may store."""


def code_bytes(*texts: str) -> int:
    return sum(len(text.encode()) for text in texts)


def check(store: Store, quotas: Quotas, caller: str, function_name: str, size: int, *, service: bool = False) -> bool:
    """Whether storing a version of function_name (size bytes of code) creates the
    function; QuotaExceeded, listing every limit it would pass, if caller may not
    store it. service: the learning loop (only versions per function apply)."""
    creates = store.current_version(function_name) is None
    used = store.quota_usage(caller, function_name)
    violations = []
    if not service and creates and quotas.functions and used.functions + 1 > quotas.functions:
        violations.append(QuotaViolation(caller, f"functions created: {used.functions} of {quotas.functions}"))
    if quotas.versions_per_function and used.versions + 1 > quotas.versions_per_function:
        violations.append(QuotaViolation(
            caller, f"versions of {function_name}: {used.versions} of {quotas.versions_per_function}"
        ))
    if not service and quotas.bytes and used.bytes + size > quotas.bytes:
        violations.append(QuotaViolation(
            caller, f"bytes of code stored: {used.bytes} of {quotas.bytes}; this version needs {size}"
        ))
    if violations:
        raise QuotaExceeded(
            f"quota exceeded: {'; '.join(v.description for v in violations)}",
            violations=violations,
            metadata={"principal": caller, "function_name": function_name},
        )
    return creates
