"""Helpers for the domain tests (tests/unit/generator/test_domain_*.py): enhance a
source in a domain, load the generated module, capture the events it emits."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import generate

_CACHE: dict[str, GeneratedCode] = {}


def generated(source: str, name: str, domain: str, config: dict[str, Any]) -> GeneratedCode:
    """generate() for this spec, once per test session (generation is deterministic)."""
    key = json.dumps([source, name, domain, config], sort_keys=True)
    if key not in _CACHE:
        config = {"annotation_checks": "enforce", **config}  # as conftest.ENFORCED
        _CACHE[key] = generate(EnhancementSpec(function_name=name, original_code=source, domain=domain, config=config))
    return _CACHE[key]


def enhanced(load: Callable[[str], ModuleType], source: str, name: str, domain: str, **config: Any) -> ModuleType:
    """The generated module of `name` in `domain` (config as keyword arguments), loaded fresh."""
    return load(generated(source, name, domain=domain, config=config).python)


def code_of(source: str, name: str, domain: str, **config: Any) -> GeneratedCode:
    return generated(source, name, domain=domain, config=config)


def capture(module: ModuleType) -> list[tuple[str, dict, dict]]:
    """Replace the module's _poet_emit: every event lands in the returned list as
    (event_type, payload, keyword arguments)."""
    events: list[tuple[str, dict, dict]] = []

    def emit(event_type: str, payload: dict, **kwargs: Any) -> None:
        kwargs.pop("params", None)
        kwargs.pop("function_name", None)
        if not kwargs.get("causation_id"):
            kwargs.pop("causation_id", None)
        events.append((event_type, payload, kwargs))

    module._poet_emit = emit
    return events
