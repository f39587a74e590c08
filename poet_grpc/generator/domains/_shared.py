"""Runtime helpers more than one domain uses: event emission and the audit trail."""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import literal
from poet_grpc.generator.domains._types import DomainCode, DomainParam, Target

EMIT = '''
def _poet_domain_emit(event_type, payload, correlation_id=""):
    """Hand a domain event to the function's _poet_function_emit (which never raises or
    blocks and sends only when the service is configured)."""
    try:
        _poet_function_emit(event_type, payload, correlation_id=correlation_id)
    except Exception:
        pass
'''

AUDIT = '''
import collections
import hashlib
import os
from time import time as _poet_audit_clock  # as at import: a caller patching time.time keeps its values

_POET_AUDIT = collections.deque(maxlen=_POET_PARAMS["audit_log_size"])
"""Audit trail of the function, newest last, bounded (audit_log_size); also <function>.poet_audit."""


def _poet_digest(value):
    """SHA-256 (hex) of repr(value); an object whose repr fails is digested by its type name."""
    try:
        text = repr(value)
    except Exception:
        text = "<unrepresentable " + type(value).__qualname__ + ">"
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


def _poet_audit_arguments(arguments):
    """Digest of the arguments as received: repr of ((parameter, value), ...). Never raises."""
    try:
        return _poet_digest(arguments)
    except Exception:
        return ""


def _poet_audit_record(arguments_digest, error, result, succeeded):
    """Append one audit entry (digests only, never raw values) and emit it as audit.recorded."""
    try:
        version = _POET_VERSION
    except NameError:
        version = ""
    entry = {
        "execution_id": os.urandom(16).hex(),
        "timestamp": _poet_audit_clock(),
        "function": _POET_FUNCTION,
        "domain": _POET_DOMAIN,
        "version": version,
        "arguments_sha256": arguments_digest,
        "outcome": "success" if succeeded else "error",
        "error_type": None if succeeded else type(error).__name__,
        "result_sha256": _poet_digest(result) if succeeded else None,
    }
    _POET_AUDIT.append(entry)
    _poet_domain_emit("audit.recorded", dict(entry), correlation_id=entry["execution_id"])
'''

AUDIT_TRAIL = "audit_trail"


def audit_parameters(default_on: bool) -> tuple[DomainParam, ...]:
    return (
        DomainParam(
            "audit_log",
            "Audit trail: every call appends an entry {execution_id, timestamp, function, domain, version, "
            "arguments_sha256 (SHA-256 of repr of the arguments as received), outcome (success/error), "
            "error_type, result_sha256} to <function>.poet_audit and emits it as an audit.recorded event. "
            "Digests only, never raw values (a digest of a short, guessable value can be brute-forced: it "
            "proves equality, it does not hide).",
            default_on,
        ),
        DomainParam(
            "audit_log_size", "Entries <function>.poet_audit keeps (the oldest are dropped).", 1000, 1, 1_000_000
        ),
    )


def audit_code(target: Target) -> DomainCode:
    """The audit trail for any function (when audit_log is on)."""
    if not target.params.get("audit_log"):
        return DomainCode()
    pairs = "".join(f"({literal(p.label)}, {p.name}), " for p in target.parameters)
    return DomainCode(
        runtime=(EMIT, AUDIT),
        start=(f"_poet_audit_digest = _poet_audit_arguments(({pairs}))",),
        on_error=("_poet_audit_record(_poet_audit_digest, _poet_error, None, False)",),
        on_success=("_poet_audit_record(_poet_audit_digest, None, _poet_result, True)",),
        finish=(f"{target.name}.poet_audit = _POET_AUDIT",),
        features=(AUDIT_TRAIL,),
    )
