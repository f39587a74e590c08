"""The sinks file: a JSON list of outbound sinks, validated at startup.

    [{"name": "oncall", "kind": "pagerduty", "url": "https://events.pagerduty.com/v2/enqueue",
      "routing_key": "env:PAGERDUTY_ROUTING_KEY", "event_types": ["alert.create_external"]}]

Any string value may be "env:VAR": it is read from the environment at startup
(seed 002 style), so secrets stay out of the file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

KINDS = ("webhook", "pagerduty", "slack", "mlflow")
_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
_DEFAULT_TYPES = {"pagerduty": ("alert.create_external",)}


class SinksFileError(ValueError):
    """The sinks file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SinkConfig:
    name: str
    """Unique; the sink's log position is kept as consumer "sink:<name>"."""
    kind: str
    """webhook, pagerduty, slack or mlflow."""
    url: str
    """Where to POST (for mlflow: the tracking URI)."""
    event_types: tuple[str, ...]
    """Glob patterns of the event types delivered, e.g. "alert.*"."""
    routing_key: str = ""
    """pagerduty: the integration's routing key."""
    run_id: str = ""
    """mlflow: run tagged when the event carries no payload.mlflow_run_id."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra request headers (e.g. Authorization)."""
    max_attempts: int = 5
    """Attempts per event before it goes to the dead-letter table."""
    backoff_initial_seconds: float = 0.5
    """First retry delay; doubles per attempt, with jitter."""
    backoff_max_seconds: float = 30.0
    """Upper bound of a retry delay, Retry-After included."""
    timeout_seconds: float = 10.0
    """Time limit of one HTTP request."""
    breaker_threshold: int = 5
    """Consecutive failures that open the circuit breaker."""
    breaker_reset_seconds: float = 30.0
    """How long an open breaker sends nothing before one trial request."""

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.event_types)


_NUMBERS = {
    "max_attempts": (int, 1),
    "backoff_initial_seconds": (float, 0),
    "backoff_max_seconds": (float, 0),
    "timeout_seconds": (float, 0.001),
    "breaker_threshold": (int, 1),
    "breaker_reset_seconds": (float, 0),
}
_KNOWN = {"name", "kind", "url", "event_types", "routing_key", "run_id", "headers", "enabled", *_NUMBERS}


def load_sinks(path: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> list[SinkConfig]:
    """The enabled sinks of the file ([] when no file is configured)."""
    if not path:
        return []
    env = os.environ if env is None else env
    where = f"sinks file {str(path)!r}"
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SinksFileError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SinksFileError(f"{where}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and "sinks" in data:
        data = data["sinks"]
    if not isinstance(data, list):
        raise SinksFileError(f"{where}: must be a JSON list of sinks (or {{\"sinks\": [...]}})")
    sinks: list[SinkConfig] = []
    for i, raw in enumerate(data):
        sink = _sink(raw, f"{where}: sinks[{i}]", env)
        if sink is None:
            continue
        if any(s.name == sink.name for s in sinks):
            raise SinksFileError(f"{where}: sinks[{i}]: name {sink.name!r} is used twice")
        sinks.append(sink)
    return sinks


def _sink(raw: Any, where: str, env: Mapping[str, str]) -> SinkConfig | None:
    if not isinstance(raw, dict):
        raise SinksFileError(f"{where}: must be an object")
    unknown = sorted(set(raw) - _KNOWN)
    if unknown:
        raise SinksFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if raw.get("enabled", True) is False:
        return None

    def text(key: str, *, required: bool = False) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise SinksFileError(f"{where}.{key}: must be a string")
        value = _resolve(value, f"{where}.{key}", env)
        if required and not value:
            raise SinksFileError(f"{where}.{key}: is required")
        return value

    name = text("name", required=True)
    if not _NAME.fullmatch(name):
        raise SinksFileError(f"{where}.name: must be lowercase letters, digits, - or _ (got {name!r})")
    where = f"{where} ({name})"
    kind = text("kind", required=True)
    if kind not in KINDS:
        raise SinksFileError(f"{where}.kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    url = text("url", required=True)
    if not re.match(r"https?://[^/\s]+", url):
        raise SinksFileError(f"{where}.url: must be an http(s) URL (got {url!r})")
    types = raw.get("event_types", list(_DEFAULT_TYPES.get(kind, ())))
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise SinksFileError(f"{where}.event_types: must be a non-empty list of event types or patterns like \"alert.*\"")
    routing_key = text("routing_key")
    if kind == "pagerduty" and not routing_key:
        raise SinksFileError(f"{where}.routing_key: is required for a pagerduty sink")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise SinksFileError(f"{where}.headers: must be an object of strings")
    numbers: dict[str, Any] = {}
    for key, (kind_of, minimum) in _NUMBERS.items():
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind_of is int and not isinstance(value, int)):
            raise SinksFileError(f"{where}.{key}: must be a{'n integer' if kind_of is int else ' number'}")
        if value < minimum:
            raise SinksFileError(f"{where}.{key}: must be at least {minimum}")
        numbers[key] = kind_of(value)
    return SinkConfig(
        name=name,
        kind=kind,
        url=url.rstrip("/") if kind == "mlflow" else url,
        event_types=tuple(types),
        routing_key=routing_key,
        run_id=text("run_id"),
        headers={k: _resolve(v, f"{where}.headers.{k}", env) for k, v in headers.items()},
        **numbers,
    )


def _resolve(value: str, where: str, env: Mapping[str, str]) -> str:
    if not value.startswith("env:"):
        return value
    var = value[4:]
    if not env.get(var):
        raise SinksFileError(f"{where}: environment variable {var} is not set")
    return env[var]
