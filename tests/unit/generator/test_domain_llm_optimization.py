"""llm_optimization: rate limits, timeouts, unavailable services and 429/5xx retried as
transient; prompts longer than max_prompt_chars rejected."""

from __future__ import annotations

import asyncio

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "llm_optimization"
FAST = {"backoff_base_seconds": 0.001, "backoff_max_seconds": 0.001, "jitter": 0.0}

ASK = '''
class RateLimitError(Exception):
    pass


class APIStatusError(Exception):
    def __init__(self, message, status_code):
        super().__init__(message)
        self.status_code = status_code


class Response:
    status_code = 503


class HTTPError(Exception):
    response = Response()


FAILURES = []


def ask(prompt: str, model: str = "m") -> str:
    if FAILURES:
        raise FAILURES.pop(0)
    return prompt.upper()
'''

ASK_ASYNC = '''
FAILURES = []


class ServiceUnavailable(Exception):
    pass


async def ask(messages: list) -> int:
    if FAILURES:
        raise FAILURES.pop(0)
    return len(messages)
'''


@pytest.fixture
def ask(load):
    return enhanced(load, ASK, "ask", DOMAIN, **FAST)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.RateLimitError("slow down"),
        lambda m: m.APIStatusError("busy", 429),
        lambda m: m.APIStatusError("bad gateway", 502),
        lambda m: m.HTTPError("unavailable"),  # response.status_code 503
        lambda m: TimeoutError("read timed out"),
        lambda m: type("APITimeoutError", (Exception,), {})("timeout"),
    ],
)
def test_transient_llm_errors_are_retried(ask, make) -> None:
    ask.FAILURES[:] = [make(ask), make(ask)]
    assert ask.ask("hi") == "HI"
    assert ask.ask.poet_metrics["retries"] == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.APIStatusError("bad request", 400),
        lambda m: m.APIStatusError("not implemented", 501),
        lambda m: ValueError("bad prompt"),
    ],
)
def test_other_errors_propagate_at_once(ask, make) -> None:
    error = make(ask)
    ask.FAILURES[:] = [error]
    with pytest.raises(type(error)) as caught:
        ask.ask("hi")
    assert caught.value is error and ask.ask.poet_metrics["retries"] == 0


def test_after_the_last_retry_the_last_error_propagates(load) -> None:
    module = enhanced(load, ASK, "ask", DOMAIN, max_retries=2, **FAST)
    errors = [module.RateLimitError(str(i)) for i in range(3)]
    module.FAILURES[:] = list(errors)
    with pytest.raises(module.RateLimitError) as caught:
        module.ask("hi")
    assert caught.value is errors[2]


def test_async_functions_retry_transient_llm_errors(load) -> None:
    module = enhanced(load, ASK_ASYNC, "ask", DOMAIN, **FAST)
    module.FAILURES[:] = [module.ServiceUnavailable("try later")]
    assert asyncio.run(module.ask([{"role": "user", "content": "x"}])) == 1
    assert module.ask.poet_metrics["retries"] == 1


def test_long_prompts_are_rejected_naming_the_parameter(load) -> None:
    module = enhanced(load, ASK, "ask", DOMAIN, max_prompt_chars=5)
    assert module.ask("12345") == "12345"
    with pytest.raises(ValueError, match=r"argument 'prompt' is longer than 5 characters \(max_prompt_chars\)"):
        module.ask("123456")
    chat = enhanced(load, ASK_ASYNC, "ask", DOMAIN, max_prompt_chars=5)
    assert asyncio.run(chat.ask([{"role": "user", "content": "abc"}, "de"])) == 2
    with pytest.raises(ValueError, match="'messages'"):
        asyncio.run(chat.ask([{"role": "user", "content": "abc"}, {"role": "user", "content": "def"}]))


def test_other_domains_keep_the_conservative_rule(load) -> None:
    module = enhanced(load, ASK, "ask", "base_reliability", **FAST)
    module.FAILURES[:] = [module.RateLimitError("slow down")]
    with pytest.raises(module.RateLimitError):
        module.ask("hi")


def test_no_retries_no_wider_rule() -> None:
    code = code_of(ASK, "ask", DOMAIN, max_retries=0)
    assert "transient_llm_error_retry" not in code.optimizations and "_poet_llm_transient" not in code.python


def test_generated_modules_pass_the_gate() -> None:
    for source in (ASK, ASK_ASYNC):
        check_generated(source, code_of(source, "ask", DOMAIN).python, "ask")
