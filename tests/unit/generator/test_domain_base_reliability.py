"""base_reliability: the optional circuit breaker."""

from __future__ import annotations

import asyncio
import time

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "base_reliability"
BREAKER = {"circuit_breaker_failures": 2, "circuit_breaker_reset_seconds": 0.2, "max_retries": 0, "timeout_seconds": 0}

FETCH = '''
CALLS = []
DOWN = []


def fetch(key: str) -> str:
    CALLS.append(key)
    if DOWN:
        raise ConnectionError("service down")
    if key == "bad":
        raise ValueError("bad key")
    return key.upper()
'''

FETCH_ASYNC = FETCH.replace("def fetch", "async def fetch")


def test_off_by_default() -> None:
    code = code_of(FETCH, "fetch", DOMAIN)
    assert "circuit_breaker" not in code.optimizations and "_poet_circuit_check" not in code.python


def test_the_circuit_opens_after_consecutive_transient_failures_and_recovers(load) -> None:
    module = enhanced(load, FETCH, "fetch", DOMAIN, **BREAKER)
    module.DOWN.append(True)
    for _ in range(2):
        with pytest.raises(ConnectionError, match="service down"):
            module.fetch("a")
    with pytest.raises(ConnectionError, match=r"fetch\(\) circuit open after 2 consecutive transient failures"):
        module.fetch("a")
    assert len(module.CALLS) == 2  # the third call never ran the function
    assert module.fetch.poet_metrics["short_circuited"] == 1
    time.sleep(0.25)
    with pytest.raises(ConnectionError, match="service down"):  # after the pause: tried again, failed, open again
        module.fetch("a")
    with pytest.raises(ConnectionError, match="circuit open"):
        module.fetch("a")
    time.sleep(0.25)
    module.DOWN.clear()
    assert module.fetch("a") == "A"  # a success closes it
    assert module.fetch.poet_circuit == {"failures": 0, "opened_at": None}


def test_other_errors_and_rejected_inputs_do_not_count(load) -> None:
    module = enhanced(load, FETCH, "fetch", DOMAIN, **BREAKER)
    for _ in range(3):
        with pytest.raises(ValueError):
            module.fetch("bad")
        with pytest.raises(TypeError):
            module.fetch(5)
    assert module.fetch("ok") == "OK"
    assert module.fetch.poet_circuit["failures"] == 0


def test_async_functions_have_the_breaker_too(load) -> None:
    module = enhanced(load, FETCH_ASYNC, "fetch", DOMAIN, **BREAKER)
    module.DOWN.append(True)
    for _ in range(2):
        with pytest.raises(ConnectionError, match="service down"):
            asyncio.run(module.fetch("a"))
    with pytest.raises(ConnectionError, match="circuit open"):
        asyncio.run(module.fetch("a"))


def test_generated_modules_pass_the_gate() -> None:
    for source in (FETCH, FETCH_ASYNC):
        check_generated(source, code_of(source, "fetch", DOMAIN, **BREAKER).python, "fetch")
