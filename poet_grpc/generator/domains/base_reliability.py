"""base_reliability: the default domain; the four stages with general-purpose settings,
plus an optional circuit breaker.

Circuit breaker (circuit_breaker_failures > 0; off by default, because an open circuit
refuses calls whose arguments are valid): after that many consecutive calls failed in
Operate with a transient error (ConnectionError, TimeoutError: after their retries),
calls fail fast for circuit_breaker_reset_seconds with ConnectionError("... circuit
open ...") without running the original (counted in poet_metrics as short_circuited). A
call after that pause runs normally: a success closes the circuit (the count restarts at
0), another transient failure opens it again at once. Concurrent calls after the pause
all go through (no single trial call).
"""

from __future__ import annotations

from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

CIRCUIT_BREAKER = "circuit_breaker"

BREAKER = '''
import threading
import time

_POET_METRICS.setdefault("short_circuited", 0)
_POET_CIRCUIT = {"failures": 0, "opened_at": None}
"""Circuit breaker state: consecutive transient failures, and when the circuit last opened."""
_lock = threading.Lock()


def _poet_circuit_check():
    """Operate: fail fast while the circuit is open."""
    with _lock:
        opened = _POET_CIRCUIT["opened_at"]
        if opened is None or time.monotonic() - opened >= _POET_PARAMS["circuit_breaker_reset_seconds"]:
            return
    _poet_count("short_circuited")
    error = ConnectionError(
        f"{_POET_FUNCTION}() circuit open after {_POET_CIRCUIT['failures']} consecutive transient failures; "
        f"calls resume {_POET_PARAMS['circuit_breaker_reset_seconds']} s after it opened"
    )
    error.poet_circuit_open = True
    raise error


def _poet_circuit_failed(stage, error):
    """A failed call: a transient error in Operate counts toward opening the circuit."""
    if stage != "operate" or getattr(error, "poet_circuit_open", False) or not _poet_is_transient(error):
        return
    with _lock:
        _POET_CIRCUIT["failures"] += 1
        if _POET_CIRCUIT["failures"] >= _POET_PARAMS["circuit_breaker_failures"]:
            _POET_CIRCUIT["opened_at"] = time.monotonic()


def _poet_circuit_succeeded():
    with _lock:
        _POET_CIRCUIT["failures"] = 0
        _POET_CIRCUIT["opened_at"] = None
'''


def code(target: Target) -> DomainCode:
    if target.is_generator or not target.params["circuit_breaker_failures"]:
        return DomainCode()
    return DomainCode(
        runtime=(BREAKER,),
        before_operate=("_poet_circuit_check()",),
        on_error=("_poet_circuit_failed(_poet_stage, _poet_error)",),
        on_success=("_poet_circuit_succeeded()",),
        finish=(f"{target.name}.poet_circuit = _POET_CIRCUIT",),
        features=(CIRCUIT_BREAKER,),
    )


DOMAIN = DomainInfo(
    name="base_reliability",
    description=(
        "General-purpose reliability, the default. Perceive: arguments checked against simple type "
        "annotations. Operate: retries with exponential backoff and jitter on transient errors "
        "(ConnectionError, TimeoutError) and a deadline on the whole call; optionally a circuit breaker that "
        "fails fast after repeated transient failures (circuit_breaker_failures, off by default). Enforce: the "
        "result checked against a simple return annotation. Train: in-process execution metrics on the function."
    ),
    parameters=reliability_parameters()
    + (
        DomainParam(
            "circuit_breaker_failures",
            "Consecutive transient failures (after retries) that open the circuit: calls then fail fast with "
            "ConnectionError for circuit_breaker_reset_seconds without running the function. 0 (default) "
            "disables the breaker, since an open circuit refuses valid calls.",
            0,
            0,
            1000,
        ),
        DomainParam("circuit_breaker_reset_seconds", "How long an open circuit fails calls fast.", 30.0, 0.0, 86400.0),
    ),
    code=code,
)
