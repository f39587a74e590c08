"""What a domain is: a name, an honest description and its parameters with defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RECORDED = " Recorded in the version's params for a domain stage to come; the template generator does not act on it yet."


@dataclass(frozen=True)
class DomainParam:
    """One tunable parameter of a domain."""

    name: str
    description: str
    """What the parameter controls (and whether the generated code uses it yet)."""
    default: Any
    """JSON-compatible value used when the request does not set it."""


@dataclass(frozen=True)
class DomainInfo:
    """A domain the generator knows."""

    name: str
    description: str
    """What the domain adds to a function, as generated today."""
    parameters: tuple[DomainParam, ...]


_RELIABILITY: tuple[DomainParam, ...] = (
    DomainParam(
        "max_retries",
        "Retries after a failed first attempt, only for transient errors (ConnectionError, TimeoutError "
        "and their subclasses); any other error propagates at once. 0 disables retrying.",
        3,
    ),
    DomainParam(
        "backoff_base_seconds",
        "Delay before the first retry; each later retry waits backoff_multiplier times longer.",
        0.1,
    ),
    DomainParam("backoff_multiplier", "Growth factor of the delay between consecutive retries (>= 1).", 2.0),
    DomainParam("backoff_max_seconds", "Upper bound of a single retry delay.", 10.0),
    DomainParam(
        "jitter",
        "Fraction of each retry delay removed at random (0: exact delays; 1: anywhere between zero and the "
        "delay), so callers that failed together do not retry together.",
        0.1,
    ),
    DomainParam(
        "timeout_seconds",
        "Deadline of the whole call, retries and delays included; 0 disables it. An async function is "
        "cancelled at the deadline; a sync function runs in a worker thread that cannot be stopped, so "
        "after the TimeoutError it keeps running in the background until it returns.",
        30.0,
    ),
    DomainParam(
        "validate_inputs",
        "Perceive: check arguments against simple type annotations (int, float, str, bool, list, dict, "
        "tuple, Optional/unions...); a mismatch raises TypeError naming the parameter.",
        True,
    ),
    DomainParam(
        "validate_outputs",
        "Enforce: check the result against a simple return annotation; a mismatch raises TypeError.",
        True,
    ),
    DomainParam(
        "check_element_types",
        "Also check the elements of annotated containers (list[int], dict[str, float], tuple[int, str]...), "
        "at a cost proportional to their size.",
        False,
    ),
    DomainParam(
        "reject_non_finite_floats",
        "Reject NaN and infinite floats given to float-annotated parameters (ValueError) or returned "
        "from a float-annotated function.",
        False,
    ),
)
RELIABILITY_NAMES = tuple(p.name for p in _RELIABILITY)


def reliability_parameters(**defaults: Any) -> tuple[DomainParam, ...]:
    """The base reliability parameters, with some defaults changed for a domain."""
    unknown = set(defaults) - set(RELIABILITY_NAMES)
    if unknown:
        raise ValueError(f"not reliability parameters: {sorted(unknown)}")
    return tuple(DomainParam(p.name, p.description, defaults.get(p.name, p.default)) for p in _RELIABILITY)


def recorded(name: str, description: str, default: Any) -> DomainParam:
    """A domain-specific parameter that is stored with the version but not applied yet."""
    return DomainParam(name, description + RECORDED, default)
