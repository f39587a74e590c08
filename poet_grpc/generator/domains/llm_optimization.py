"""llm_optimization: functions that call language models over the network.

Operate: besides ConnectionError and TimeoutError, an exception is transient (retried
with backoff) when the name of its class or of a base class contains one of
`transient_error_names` (RateLimit, Timeout, ServiceUnavailable, ...: openai's
RateLimitError, APITimeoutError, google's ServiceUnavailable, ResourceExhausted...), or
when it carries an HTTP status in `transient_status_codes` (429, 500, 502, 503, 504,
529; not 501 or 505) as `status_code`, `code` or `http_status` (an int) or as
`response.status_code`.
Perceive: prompt parameters (`prompt_params` name convention: prompt, messages...)
longer than max_prompt_chars are rejected (ValueError naming the parameter): a str by
its length, a list of messages by the total length of their str contents (str items,
or the "content" of dict items when it is a str).
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import literal, name_matches
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

TRANSIENT_LLM_ERRORS = "transient_llm_error_retry"
PROMPT_LENGTH = "prompt_length_limit"

TRANSIENT = '''
def _poet_is_transient(error):
    """Operate: is `error` transient? The base rule (ConnectionError, TimeoutError) widened by
    llm_optimization to rate limits, timeouts and unavailable services by class name or HTTP status."""
    if isinstance(error, _POET_TRANSIENT_ERRORS):
        return True
    try:
        return _poet_llm_transient(error)
    except Exception:  # an odd attribute must not replace the original error
        return False


def _poet_llm_transient(error):
    names = [str(n) for n in _POET_PARAMS["transient_error_names"]]
    for cls in type(error).__mro__:
        if any(n and n in cls.__name__ for n in names):
            return True
    codes = _POET_PARAMS["transient_status_codes"]
    response = getattr(error, "response", None)
    for status in (
        getattr(error, "status_code", None),
        getattr(error, "code", None),
        getattr(error, "http_status", None),
        getattr(response, "status_code", None),
    ):
        if isinstance(status, int) and not isinstance(status, bool) and status in codes:
            return True
    return False
'''

PROMPT = '''
def _poet_prompt_chars(value):
    """Characters of a prompt: a str's length, or the total length of a message list's str contents."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        total = 0
        for item in value:
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, dict) and isinstance(item.get("content"), str):
                total += len(item["content"])
        return total
    return 0


def _poet_check_prompt(parameter, value):
    """A prompt must not be longer than max_prompt_chars (0: no limit)."""
    limit = _POET_PARAMS["max_prompt_chars"]
    if limit and _poet_prompt_chars(value) > limit:
        raise ValueError(
            f"{_POET_FUNCTION}() argument {parameter!r} is longer than {limit} characters (max_prompt_chars)"
        )
'''

PROMPT_NAMES = ["prompt", "messages", "system_prompt", "user_prompt"]
ERROR_NAMES = ["RateLimit", "Timeout", "ServiceUnavailable", "TooManyRequests", "ResourceExhausted", "Overloaded"]
STATUS_CODES = [429, 500, 502, 503, 504, 529]


def prompt_code(target: Target) -> DomainCode:
    """The max_prompt_chars check for prompt-named parameters (shared with prompt_optimization)."""
    params = target.params
    perceive = tuple(
        f"_poet_check_prompt({literal(p.name)}, {p.name})"
        for p in target.named
        if params["max_prompt_chars"] and name_matches(p.name, params["prompt_params"])
    )
    if not perceive:
        return DomainCode()
    return DomainCode(runtime=(PROMPT,), perceive=perceive, perceive_features=(PROMPT_LENGTH,))


def code(target: Target) -> DomainCode:
    transient = DomainCode()
    if not target.is_generator and target.params["max_retries"] > 0:
        transient = DomainCode(runtime=(TRANSIENT,), features=(TRANSIENT_LLM_ERRORS,))
    return transient + prompt_code(target)


DOMAIN = DomainInfo(
    name="llm_optimization",
    description=(
        "Functions that call language models over the network. The base reliability stages tuned for slow, "
        "rate-limited remote calls: four retries, backoff from 1 s up to 30 s, a 120 s deadline; besides "
        "ConnectionError and TimeoutError, errors whose class name contains RateLimit, Timeout, "
        "ServiceUnavailable, TooManyRequests, ResourceExhausted or Overloaded, or that carry HTTP status 429, 500, "
        "502, 503, 504 or 529 (status_code, code, http_status, response.status_code) are retried as transient. "
        "Perceive: prompt parameters (prompt, messages...) longer than max_prompt_chars are rejected naming the "
        "parameter."
    ),
    parameters=reliability_parameters(
        max_retries=4, backoff_base_seconds=1.0, backoff_max_seconds=30.0, timeout_seconds=120.0
    )
    + (
        DomainParam(
            "transient_error_names",
            "Substrings of exception class names (the class or a base class) that mark an error as transient.",
            ERROR_NAMES,
        ),
        DomainParam("transient_status_codes", "HTTP statuses that mark an error as transient.", STATUS_CODES),
        DomainParam(
            "prompt_params",
            "Name convention of prompt parameters (an entry matches the name itself, entry_* and *_entry).",
            PROMPT_NAMES,
        ),
        DomainParam(
            "max_prompt_chars",
            "Longest prompt accepted, in characters (a message list: the total of its contents); 0: no limit.",
            200_000,
            0,
        ),
    ),
    code=code,
)
