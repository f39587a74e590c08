"""Reaching inside a generated module's POET sections, for tests: each enhanced function's
helpers are locals of its section's factory, which the enhanced function closes over."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


def section(function: Any) -> dict[str, Any]:
    """The names of an enhanced function's POET section (its factory's locals, which the
    enhanced function closes over), found through the closures: for tests that look inside."""
    found: dict[str, Any] = {}
    stack, seen = [function], set()
    while stack:
        f = stack.pop()
        code, cells = getattr(f, "__code__", None), getattr(f, "__closure__", None)
        if id(f) in seen or code is None or not cells:
            continue
        seen.add(id(f))
        for name, cell in zip(code.co_freevars, cells):
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            found.setdefault(name, value)
            if hasattr(value, "__code__"):
                stack.append(value)
    return found


def expose_sections(module: ModuleType) -> None:
    """Each enhanced function's section names as module attributes (when not taken), and its
    original as _poet_original_<name>, so that tests can reach the helpers."""
    for name, value in list(vars(module).items()):
        if not hasattr(value, "poet_params") or not hasattr(value, "__wrapped__"):
            continue
        inner = value
        while not hasattr(inner, "__closure__") and hasattr(inner, "__wrapped__"):
            inner = inner.__wrapped__
        names = section(inner)
        for key, item in names.items():
            if key.startswith(("_poet_", "_POET_")) and not hasattr(module, key):
                setattr(module, key, item)
        if "_poet_original" in names:
            setattr(module, f"_poet_original_{name}", names["_poet_original"])


def set_original(function: Any, replacement: Callable[..., Any]) -> None:
    """Make an enhanced function call `replacement` instead of its original (a test spy)."""
    code, cells = function.__code__, function.__closure__
    cells[code.co_freevars.index("_poet_original")].cell_contents = replacement
