"""data_processing: None rows rejected where the element type is concrete, the missing-row
cap, and row counts in the metrics."""

from __future__ import annotations

import math

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "data_processing"

CLEAN = '''
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass
class Order:
    total: float


def clean(orders: list[Order], tags: Sequence[Optional[str]], records, limit: int = 10) -> list:
    return [o for o in orders if o.total > 0][:limit] + [t for t in tags if t] + list(records or [])
'''


@pytest.fixture
def clean(load):
    return enhanced(load, CLEAN, "clean", DOMAIN)


def test_valid_rows_pass_unchanged(clean, load) -> None:
    original = load(CLEAN)
    args = ([clean.Order(1.0), clean.Order(-1.0)], ["a", None], (1, 2))
    expected = original.clean([original.Order(1.0), original.Order(-1.0)], ["a", None], (1, 2))
    assert len(clean.clean(*args)) == len(expected) == 4


def test_none_rows_are_rejected_where_the_element_type_is_concrete(clean) -> None:
    with pytest.raises(TypeError, match="argument 'orders' has a None row at index 1"):
        clean.clean([clean.Order(1.0), None], [], None)
    assert clean.clean([], [None, None], [None]) == [None]  # Optional elements, unannotated records: allowed
    assert clean.clean.poet_metrics["rejected_inputs"] == 1


def test_the_missing_row_cap(load) -> None:
    module = enhanced(load, CLEAN, "clean", DOMAIN, max_null_fraction=0.5)
    assert module.clean([], ["a", None], []) == ["a"]
    message = r"argument 'records' has 2 missing rows of 3, more than max_null_fraction \(0.5\)"
    with pytest.raises(ValueError, match=message):
        module.clean([], [], [None, math.nan, 1])


def test_row_counts_are_in_the_metrics(clean) -> None:
    clean.clean([clean.Order(1.0), clean.Order(2.0)], ("a", None, "b"), [7])
    clean.clean([], [], None)
    metrics = clean.clean.poet_metrics
    assert (metrics["rows_in"], metrics["rows_out"], metrics["null_rows_in"]) == (6, 5, 1)


def test_none_row_rejection_can_be_switched_off(load) -> None:
    module = enhanced(load, CLEAN, "clean", DOMAIN, reject_none_rows=False)
    with pytest.raises(AttributeError):  # the function's own error
        module.clean([None], [], None)


def test_functions_without_row_sequences_are_untouched() -> None:
    code = code_of("def add(a: int, b: int) -> int:\n    return a + b\n", "add", DOMAIN)
    assert "row_count_metrics" not in code.optimizations and "rows_in" not in code.python


def test_typevar_and_any_elements_allow_none(load) -> None:
    source = (
        "from typing import Any, TypeVar\n\nT = TypeVar('T')\n\n\n"
        "def first(items: list[T], extra: list[Any]) -> object:\n    return items[0]\n"
    )
    module = enhanced(load, source, "first", DOMAIN)
    assert module.first([None], [None]) is None


def test_generated_module_passes_the_gate() -> None:
    check_generated(CLEAN, code_of(CLEAN, "clean", DOMAIN).python, "clean")
