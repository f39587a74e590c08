"""GeminiGenerator: the real google-genai client against a local fake Gemini server.

No test calls a remote API: every generator here points base_url at GeminiFake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fakes.gemini_server import GeminiFake, Reply, code_reply, error_reply, text_reply

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import GeminiGenerator, generate, safety_level

SOURCE = '''"""Shipping."""


def ship(weight: float, express: bool = False) -> float:
    """Cost of a parcel."""
    return weight * (2.0 if express else 1.0)
'''
SPEC = EnhancementSpec(function_name="ship", original_code=SOURCE)

RETRY_ONLY = (
    SOURCE
    + '''

import functools as _poet_functools
import time as _poet_time

_poet_original_ship = ship


def ship(weight: float, express: bool = False) -> float:
    """Cost of a parcel."""
    for _poet_attempt in range(3):
        try:
            return _poet_original_ship(weight, express)
        except (ConnectionError, TimeoutError):
            if _poet_attempt == 2:
                raise
            _poet_time.sleep(0.01 * 2**_poet_attempt)


_poet_functools.update_wrapper(ship, _poet_original_ship)
'''
)
"""A hand-written LLM answer with retries only (no checks, no deadline, no metrics)."""


@pytest.fixture(scope="module")
def template() -> GeneratedCode:
    return generate(SPEC)


@pytest.fixture(scope="module")
def good(template: GeneratedCode) -> str:
    """The template's module, marked: what a good answer looks like."""
    return "# rewritten by the fake LLM\n" + template.python


@pytest.fixture
def fake() -> Iterator[GeminiFake]:
    with GeminiFake() as server:
        yield server


@pytest.fixture
def make(fake: GeminiFake) -> Callable[..., GeminiGenerator]:
    def _make(**kw) -> GeminiGenerator:
        options = dict(
            api_key="test-key",
            base_url=fake.base_url,
            timeout_seconds=2.0,
            max_attempts=3,
            backoff_base_seconds=0.01,
            backoff_max_seconds=0.02,
            max_retry_after_seconds=0.2,
            failure_threshold=3,
            reset_seconds=0.3,
        )
        options.update(kw)
        return GeminiGenerator(**options)

    return _make


def test_good_code_is_the_version(fake, make, template, good) -> None:
    fake.push(code_reply(good))
    llm = make()
    code = llm.enhance(SPEC, template)
    assert code is not None, llm.last_outcome
    assert code.generator == "gemini"
    assert code.python == good.rstrip("\n") + "\n"
    assert code.dana == template.dana and code.params == template.params
    # every safeguard of the template is found in the (same) code
    assert code.optimizations == template.optimizations
    assert code.safety_level == template.safety_level
    assert llm.last_outcome.status == "ok" and llm.last_outcome.attempts == 1
    (request,) = fake.requests
    assert request.method == "POST" and request.model == "gemini-2.5-flash"
    assert request.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert request.headers["x-goog-api-key"] == "test-key"
    assert request.generation_config["temperature"] == pytest.approx(0.2)
    assert SOURCE.rstrip("\n") in request.prompt and template.python.rstrip("\n") in request.prompt
    assert "Feedback evidence" not in request.prompt


def test_safeguards_and_safety_level_come_from_the_code_not_the_template(fake, make, template) -> None:
    fake.push(code_reply(RETRY_ONLY, prose=False))
    code = make().enhance(SPEC, template)
    assert code is not None and code.generator == "gemini"
    assert code.optimizations == ("retry",)
    assert code.safety_level == safety_level(["retry"]) < template.safety_level


def test_generate_returns_the_llm_version_or_the_template_with_the_reason(fake, make, template, good) -> None:
    llm = make()
    fake.push(code_reply(good))
    assert generate(SPEC, llm=llm).generator == "gemini"
    fake.push(text_reply("I cannot help with that."))
    fallback = generate(SPEC, llm=llm, evidence={"metrics": {"error_rate": 0.5}})
    assert fallback.generator == "template" and fallback.python == template.python
    assert fallback.params["llm_fallback_reason"].startswith("malformed_output: ")
    assert {k: v for k, v in fallback.params.items() if k != "llm_fallback_reason"} == template.params
    assert "llm_fallback_reason" not in generate(SPEC).params  # no llm, no reason


@pytest.mark.parametrize(
    ("answer", "status", "detail"),
    [
        ("Sorry, I can't write that module.", "malformed_output", "syntax"),
        ("```python\ndef ship(weight: float, express: bool = False) -> float\n    return 1\n```", "malformed_output", "syntax"),
        ("```json\n{}\n```", "malformed_output", "no python code block"),
    ],
)
def test_malformed_answers_fall_back(fake, make, template, answer, status, detail) -> None:
    fake.push(text_reply(answer))
    llm = make()
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == status and detail in llm.last_outcome.reason
    assert len(fake.requests) == 1  # an answer that arrived is not retried
    assert llm.breaker_state == "closed"


def test_code_failing_the_gate_or_the_policy_falls_back(fake, make, template, good) -> None:
    llm = make()
    changed_signature = RETRY_ONLY.replace(
        "def ship(weight: float, express: bool = False) -> float:\n    \"\"\"Cost of a parcel.\"\"\"\n    for",
        "def ship(weight: float, express: bool = True) -> float:\n    \"\"\"Cost of a parcel.\"\"\"\n    for",
    )
    assert changed_signature != RETRY_ONLY
    uses_eval = RETRY_ONLY.replace("return _poet_original_ship(weight, express)", "return eval('_poet_original_ship')(weight, express)")
    fails_import = RETRY_ONLY + "\nraise RuntimeError('boom at import')\n"
    network = good.replace("# rewritten by the fake LLM\n", "# rewritten by the fake LLM\nimport socket as _poet_socket\n")
    unlinked = RETRY_ONLY.replace("_poet_functools.update_wrapper(ship, _poet_original_ship)", "")
    cases = [
        (changed_signature, "gate_rejected", "signature"),
        (uses_eval, "policy_rejected", "eval()"),
        (fails_import, "gate_rejected", "boom at import"),
        (network, "policy_rejected", "import socket"),
        (unlinked, "policy_rejected", "not linked"),
    ]
    for code, status, detail in cases:
        fake.push(code_reply(code))
        assert llm.enhance(SPEC, template) is None, status
        assert llm.last_outcome.status == status and detail in llm.last_outcome.reason, llm.last_outcome
    assert llm.breaker_state == "closed"


def test_slow_answer_times_out_within_a_bounded_time(fake, make, template, good) -> None:
    fake.push(code_reply(good, delay_seconds=5), code_reply(good, delay_seconds=5))
    llm = make(timeout_seconds=0.3, max_attempts=2)
    started = time.monotonic()
    code = generate(SPEC, llm=llm)
    elapsed = time.monotonic() - started
    assert code.generator == "template"
    assert code.params["llm_fallback_reason"].startswith("timeout: ")
    assert len(fake.requests) == 2  # a timeout is retried
    assert elapsed < 2.0


def test_429_then_success(fake, make, template, good) -> None:
    fake.push(error_reply(429, "quota", retry_after=0), code_reply(good))
    llm = make()
    code = llm.enhance(SPEC, template)
    assert code is not None and code.generator == "gemini"
    assert len(fake.requests) == 2 and llm.last_outcome.attempts == 2


def test_server_requested_delays_are_honoured_and_bounded(fake, make, template, good) -> None:
    fake.push(error_reply(503, retry_delay="0.15s"), error_reply(429, retry_after=3600), code_reply(good))
    llm = make(max_retry_after_seconds=0.2, backoff_base_seconds=0.0)
    started = time.monotonic()
    assert llm.enhance(SPEC, template) is not None
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5  # 0.15 s (RetryInfo) + 0.2 s (an hour, bounded)
    assert len(fake.requests) == 3


def test_400_is_not_retried(fake, make, template) -> None:
    fake.push(error_reply(400, "bad request"))
    llm = make(failure_threshold=1)
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "client_error" and "400" in llm.last_outcome.reason
    assert len(fake.requests) == 1
    assert llm.breaker_state == "closed"  # a problem of that request, not of the service


def test_other_4xx_are_not_retried_but_count_for_the_breaker(fake, make, template) -> None:
    fake.push(error_reply(403, "API key not valid"))
    llm = make(failure_threshold=1)
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "client_error" and "403" in llm.last_outcome.reason
    assert len(fake.requests) == 1 and llm.breaker_state == "open"


def test_cut_or_empty_answers_fall_back(fake, make, template, good) -> None:
    llm = make()
    fake.push(text_reply("```python\n" + good[:200], finish_reason="MAX_TOKENS"))
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "malformed_output" and "MAX_TOKENS" in llm.last_outcome.reason
    fake.push(Reply(200, {"candidates": [], "promptFeedback": {"blockReason": "SAFETY"}}))
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "empty_response"
    assert len(fake.requests) == 2 and llm.breaker_state == "closed"


def test_500s_are_retried_up_to_max_attempts(fake, make, template) -> None:
    fake.push(*[error_reply(500)] * 5)
    llm = make(max_attempts=4)
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "server_error" and "after 4 attempts" in llm.last_outcome.reason
    assert len(fake.requests) == 4 and llm.last_outcome.attempts == 4


def test_connection_refused_is_a_connection_error(make, template) -> None:
    with GeminiFake() as gone:
        url = gone.base_url
    llm = make(base_url=url, max_attempts=2)
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "connection_error"


def test_breaker_opens_then_half_opens(fake, make, template, good) -> None:
    llm = make(max_attempts=1, failure_threshold=2, reset_seconds=0.3)
    fake.push(error_reply(500), error_reply(503))
    assert llm.enhance(SPEC, template) is None
    assert llm.breaker_state == "closed"
    assert llm.enhance(SPEC, template) is None
    assert llm.breaker_state == "open"
    # open: nothing is sent
    assert llm.enhance(SPEC, template) is None
    assert llm.last_outcome.status == "breaker_open" and llm.last_outcome.attempts == 0
    assert len(fake.requests) == 2
    # half-open after reset_seconds: one trial; its failure opens the breaker again
    time.sleep(0.35)
    assert llm.breaker_state == "half_open"
    fake.push(error_reply(500))
    assert llm.enhance(SPEC, template) is None and llm.last_outcome.status == "server_error"
    assert llm.breaker_state == "open" and len(fake.requests) == 3
    assert llm.enhance(SPEC, template) is None and llm.last_outcome.status == "breaker_open"
    # the next trial succeeds: closed again
    time.sleep(0.35)
    fake.push(code_reply(good))
    assert llm.enhance(SPEC, template) is not None
    assert llm.breaker_state == "closed" and len(fake.requests) == 4


def test_half_open_lets_a_single_trial_through(fake, make, template, good) -> None:
    llm = make(max_attempts=1, failure_threshold=1, reset_seconds=0.2, timeout_seconds=3.0)
    fake.push(error_reply(500))
    llm.enhance(SPEC, template)
    assert llm.breaker_state == "open"
    time.sleep(0.25)
    fake.push(code_reply(good, delay_seconds=0.5))
    results: list[str] = []

    def call(evidence: dict) -> None:
        llm.enhance(SPEC, template, evidence=evidence)
        results.append(llm.last_outcome.status)

    trial = threading.Thread(target=call, args=({},))
    trial.start()
    time.sleep(0.15)  # the trial is in flight
    call({"n": 1})
    assert results == ["breaker_open"]
    trial.join()
    assert results == ["breaker_open", "ok"] and llm.breaker_state == "closed"
    assert len(fake.requests) == 2


def test_identical_prompts_hit_the_cache(fake, make, template, good) -> None:
    fake.push(code_reply(good), code_reply(good))
    llm = make()
    first = llm.enhance(SPEC, template)
    second = llm.enhance(SPEC, template)
    assert first is not None and second == first
    assert llm.last_outcome.status == "cached" and llm.last_outcome.attempts == 0
    assert len(fake.requests) == 1
    # other evidence, other prompt: asked again
    assert llm.enhance(SPEC, template, evidence={"suggestions": ["faster"]}) is not None
    assert len(fake.requests) == 2


def test_rejected_answers_are_not_cached(fake, make, template, good) -> None:
    fake.push(text_reply("no code, sorry"), code_reply(good))
    llm = make()
    assert llm.enhance(SPEC, template) is None
    assert llm.enhance(SPEC, template) is not None
    assert len(fake.requests) == 2


def test_cache_is_bounded(fake, make, template, good) -> None:
    fake.push(*[code_reply(good)] * 4)
    llm = make(cache_size=1)
    llm.enhance(SPEC, template, evidence={"n": 1})
    llm.enhance(SPEC, template, evidence={"n": 2})
    llm.enhance(SPEC, template, evidence={"n": 1})  # evicted: asked again
    assert len(fake.requests) == 3


def test_the_prompt_carries_the_evidence(fake, make, template, good) -> None:
    evidence = {
        "metrics": {"success_rate": 0.7, "error_rate": 0.3},
        "failure_examples": [{"args": [-2.0], "error": "negative weight accepted"}],
        "suggestions": ["reject negative weights with ValueError"],
    }
    fake.push(code_reply(good))
    generate(SPEC, llm=make(), evidence=evidence)
    prompt = fake.requests[0].prompt
    assert "Address this evidence" in prompt
    for text in ('"error_rate": 0.3', "negative weight accepted", "reject negative weights with ValueError"):
        assert text in prompt


def test_concurrent_calls_from_worker_threads(fake, make, template, good) -> None:
    fake.push(*[code_reply(good)] * 6)
    llm = make()
    statuses: dict[int, str] = {}

    def work(n: int) -> None:
        code = llm.enhance(SPEC, template, evidence={"n": n})
        statuses[n] = llm.last_outcome.status if code is not None else "none"

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == {n: "ok" for n in range(6)}  # each thread sees its own outcome
    assert len(fake.requests) == 6


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        GeminiGenerator(api_key="")
    with pytest.raises(ValueError):
        GeminiGenerator(api_key="k", max_attempts=0)
