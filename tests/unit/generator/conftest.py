"""Fixtures for the generator tests: generate (cached) and load modules from source.

Tests may import generated code (through a temporary file and importlib); the
server never does.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import generate
from unit.generator.section_support import expose_sections

_CACHE: dict[str, GeneratedCode] = {}
_COUNTER = itertools.count()

ENFORCED = {"annotation_checks": "enforce"}
"""The config these tests generate with unless they set annotation_checks: most check what a
refused value does (the default, "observe", is tested in test_generator_observe.py)."""


def generated(source: str, name: str = "", **spec: Any) -> GeneratedCode:
    """generate() for this spec, computed once per test session (generation is deterministic).
    Annotation checks are enforced unless the config says otherwise (see ENFORCED)."""
    spec["config"] = {**ENFORCED, **spec.get("config", {})}
    key = json.dumps([source, name, spec], sort_keys=True)
    if key not in _CACHE:
        _CACHE[key] = generate(EnhancementSpec(function_name=name, original_code=source, **spec))
    return _CACHE[key]


@pytest.fixture
def gen() -> Callable[..., GeneratedCode]:
    """generated(source, name, **spec fields): cached generate()."""
    return generated


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Callable[[str], ModuleType]]:
    """Load a module from source text via a temporary file; a fresh module each call."""
    names: list[str] = []

    def _load(source: str) -> ModuleType:
        module_name = f"poet_test_module_{next(_COUNTER)}"
        path = tmp_path / f"{module_name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        names.append(module_name)
        spec.loader.exec_module(module)
        expose_sections(module)
        return module

    yield _load
    for module_name in names:
        sys.modules.pop(module_name, None)


@pytest.fixture
def enhance(load: Callable[[str], ModuleType]) -> Callable[..., tuple[ModuleType, ModuleType]]:
    """(original module, enhanced module) for source; spec fields as keyword arguments."""

    def _enhance(source: str, name: str, **spec: Any) -> tuple[ModuleType, ModuleType]:
        code = generated(source, name, **spec)
        return load(source), load(code.python)

    return _enhance

