"""analyze() and first_function_name(): what they report, and how they refuse bad input."""

from __future__ import annotations

import pytest

from poet_grpc.generator import AnalysisError, analyze, first_function_name

MODULE = '''
"""Billing helpers."""
import json
import os.path
from collections import Counter
from . import sibling

RATE = 0.2


def helper(x):
    return x


async def fetch(url: str, *, timeout: float = 5.0) -> bytes:
    """Fetch url."""
    import urllib.request
    return b""


@staticmethod
def total(items: list[float], /, discount: float = 0.0, *extra: int, currency: str = "EUR", strict, **meta: str) -> float:
    """Sum the items.

    With a discount.
    """
    return sum(items) * (1 - discount)


def numbers(n):
    yield from range(n)


class Invoice:
    def render(self):
        return ""
'''


def test_describes_parameters_kinds_annotations_and_defaults() -> None:
    info = analyze(MODULE, "total")
    assert info.name == "total"
    assert not info.is_async and not info.is_generator
    assert [(p.name, p.kind) for p in info.parameters] == [
        ("items", "POSITIONAL_ONLY"),
        ("discount", "POSITIONAL_OR_KEYWORD"),
        ("extra", "VAR_POSITIONAL"),
        ("currency", "KEYWORD_ONLY"),
        ("strict", "KEYWORD_ONLY"),
        ("meta", "VAR_KEYWORD"),
    ]
    by_name = {p.name: p for p in info.parameters}
    assert by_name["items"].annotation == "list[float]"
    assert by_name["discount"].has_default and by_name["discount"].default == "0.0"
    assert by_name["currency"].default == "'EUR'"
    assert not by_name["strict"].has_default and by_name["strict"].annotation == ""
    assert by_name["meta"].annotation == "str"
    assert info.return_annotation == "float"
    assert info.signature == (
        "(items: list[float], /, discount: float=0.0, *extra: int, currency: str='EUR', strict, **meta: str) -> float"
    )
    assert info.docstring == "Sum the items.\n\nWith a discount."
    assert info.decorators == ("staticmethod",)
    assert info.imports == (".", "collections", "json", "os.path", "urllib.request")


def test_async_and_generator_functions_are_recognised() -> None:
    fetch = analyze(MODULE, "fetch")
    assert fetch.is_async and not fetch.is_generator
    assert fetch.signature == "(url: str, *, timeout: float=5.0) -> bytes"
    assert analyze(MODULE, "numbers").is_generator
    assert analyze(MODULE, "helper").return_annotation == ""
    assert analyze(MODULE, "helper").docstring is None


def test_the_last_definition_of_a_name_is_the_one_analysed() -> None:
    info = analyze("def f(a):\n    return 1\n\ndef f(a, b=2):\n    return 2\n", "f")
    assert info.signature == "(a, b=2)"
    assert info.lineno == 4


def test_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze("x = 1\n\ndef broken(a, b:\n    return a\n", "broken")
    assert caught.value.field == "original_code"
    assert "line 3" in caught.value.description
    assert "column" in caught.value.description


def test_null_bytes_are_an_analysis_error() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze("def f():\n    return '\0'\x00\n", "f")
    assert caught.value.field == "original_code"


def test_missing_function_lists_the_functions_defined() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze(MODULE, "totl")
    error = caught.value
    assert error.field == "function_name"
    assert "'totl'" in error.description
    for defined in ("helper", "fetch", "total", "numbers"):
        assert defined in error.description
    assert "Invoice" not in error.description  # classes are not functions


def test_a_method_is_not_a_top_level_function() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze(MODULE, "render")
    assert caught.value.field == "function_name"
    assert "only top-level functions" in caught.value.description


def test_no_function_at_all() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze("X = 1\n", "f")
    assert caught.value.field == "function_name"
    assert "defines no top-level function" in caught.value.description


@pytest.mark.parametrize("name", ["", "not a name", "1abc"])
def test_invalid_function_names(name: str) -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze("def f():\n    pass\n", name)
    assert caught.value.field == "function_name"


def test_names_reserved_for_generated_code_are_refused() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze("_poet_state = 1\n\ndef f(x):\n    return x\n", "f")
    assert caught.value.field == "original_code"
    assert "_poet_state" in caught.value.description
    with pytest.raises(AnalysisError):
        analyze("def f(_POET_x):\n    return 1\n", "f")


def test_first_function_name() -> None:
    assert first_function_name(MODULE) == "helper"
    assert first_function_name("class A:\n    def m(self): pass\n\nasync def go():\n    pass\n") == "go"
    with pytest.raises(AnalysisError) as caught:
        first_function_name("class A:\n    pass\n")
    assert caught.value.field == "original_code"
    with pytest.raises(AnalysisError) as caught:
        first_function_name("def (:\n")
    assert "line 1" in caught.value.description
