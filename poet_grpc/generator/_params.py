"""Parameters of one generation: domain defaults, adjusted by optimize_for, overridden by config.

optimize_for (applied to the domain's defaults, before the request's config):

- "reliability" (default): the domain's defaults unchanged.
- "performance": at most 1 retry, backoff base at most 0.05 s and a single delay at
  most 1 s, container element checks off (they cost time proportional to the data).
- "safety": stricter checks: input and output validation on and enforced (a value
  its annotation does not allow is refused with TypeError, annotation_checks
  "enforce"), container element checks on, NaN and infinite floats rejected on
  float-annotated values.

The request's config wins over both. Known keys are type-checked (a JSON number
such as 3.0 is accepted for an integer) and range-checked; "retries" and "timeout"
(the Dana decorator's names) stand for max_retries and timeout_seconds. The event
emitter's keys (events_url, events_queue_size, events_batch_size, events_flush_seconds;
see _emitter) are checked the same way when given, and otherwise absent (the module
uses their defaults). Unknown keys are kept in params, and baked into the generated
module, but change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from poet_grpc.generator._emitter import DEFAULTS as EMITTER_DEFAULTS
from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator.domains import DEFAULT_DOMAIN, DOMAINS

OPTIMIZE_FOR: tuple[str, ...] = ("reliability", "performance", "safety")
DEFAULT_OPTIMIZE_FOR = "reliability"

CONFIG_ALIASES = {"retries": "max_retries", "timeout": "timeout_seconds"}
"""Short names (as written in Dana's @poet decorator) -> parameter names."""

_RANGES: dict[str, tuple[float, float]] = {
    "max_retries": (0, 20),
    "backoff_base_seconds": (0.0, 3600.0),
    "backoff_multiplier": (1.0, 10.0),
    "backoff_max_seconds": (0.0, 3600.0),
    "jitter": (0.0, 1.0),
    "timeout_seconds": (0.0, 86400.0),
    "events_queue_size": (1, 10_000_000),
    "events_batch_size": (1, 10_000),
    "events_flush_seconds": (0.0, 3600.0),
}


def _performance(p: dict[str, Any]) -> None:
    p["max_retries"] = min(p["max_retries"], 1)
    p["backoff_base_seconds"] = min(p["backoff_base_seconds"], 0.05)
    p["backoff_max_seconds"] = min(p["backoff_max_seconds"], 1.0)
    p["check_element_types"] = False


def _safety(p: dict[str, Any]) -> None:
    p["validate_inputs"] = True
    p["validate_outputs"] = True
    p["annotation_checks"] = "enforce"
    p["check_element_types"] = True
    p["reject_non_finite_floats"] = True


_ADJUST: dict[str, Callable[[dict[str, Any]], None]] = {
    "reliability": lambda p: None,
    "performance": _performance,
    "safety": _safety,
}


def resolve_domain(domain: str) -> str:
    domain = domain or DEFAULT_DOMAIN
    if domain not in DOMAINS:
        raise AnalysisError("domain", f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return domain


def resolve_optimize_for(optimize_for: str) -> str:
    optimize_for = optimize_for or DEFAULT_OPTIMIZE_FOR
    if optimize_for not in OPTIMIZE_FOR:
        raise AnalysisError("optimize_for", f"unknown goal {optimize_for!r}; known: {', '.join(OPTIMIZE_FOR)}")
    return optimize_for


SECRET_KEYS = {"events_token": "POET_EVENTS_TOKEN"}
"""Config keys refused: params are stored in the generated code and its event."""


def resolve_params(domain: str, optimize_for: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of one generation, sorted by name (see the module docstring)."""
    info = DOMAINS[resolve_domain(domain)]
    params = {p.name: p.default for p in info.parameters}
    _ADJUST[resolve_optimize_for(optimize_for)](params)
    for key, value in _canonical(config).items():
        if key in SECRET_KEYS:
            raise AnalysisError("config", f"config {key!r} would store a secret in the version's code, which every "
                                          f"viewer may read; set {SECRET_KEYS[key]} where the enhanced module runs")
        if key in params or key in EMITTER_DEFAULTS:
            params[key] = _coerce(key, value, params.get(key, EMITTER_DEFAULTS.get(key)))
        else:
            params[key] = _json_value(key, value)
    url = params.get("events_url")
    if url and not url.startswith(("http://", "https://")):
        raise AnalysisError("config", f"config 'events_url' must be an http(s) URL or empty, not {url!r}")
    return dict(sorted(params.items()))


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise AnalysisError("config", f"config keys must be non-empty strings, not {key!r}")
        name = CONFIG_ALIASES.get(key, key)
        if name in out and out[name] != value:
            raise AnalysisError("config", f"config sets {name!r} twice with different values (also as an alias)")
        out[name] = value
    return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    """value converted to the type of the parameter's default, and range-checked."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise AnalysisError("config", f"config {key!r} must be true or false, not {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AnalysisError("config", f"config {key!r} must be a finite number, not {value!r}")
        if isinstance(default, int):
            if value != int(value):
                raise AnalysisError("config", f"config {key!r} must be a whole number, not {value!r}")
            value = int(value)
        else:
            value = float(value)
        low, high = _RANGES.get(key, (-math.inf, math.inf))
        if not low <= value <= high:
            raise AnalysisError("config", f"config {key!r} must be between {low:g} and {high:g}, not {value!r}")
        return value
    if not isinstance(value, type(default)):
        raise AnalysisError("config", f"config {key!r} must be a {type(default).__name__}, not {value!r}")
    return _json_value(key, value)


def _json_value(key: str, value: Any) -> Any:
    """value as plain JSON data (lists for tuples); AnalysisError if it is not JSON-compatible."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnalysisError("config", f"config {key!r} must be finite, not {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(key, v) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise AnalysisError("config", f"config {key!r}: object keys must be strings")
        return {k: _json_value(key, v) for k, v in sorted(value.items())}
    raise AnalysisError("config", f"config {key!r} must be JSON data, not {type(value).__name__}")
