"""computation: the size guard (max_int_bits, max_input_items) and non-finite floats."""

from __future__ import annotations

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "computation"

POWER = '''
def power_sum(base: int, *exponents, scale: float = 1.0, **options) -> float:
    return sum(base ** e for e in exponents) * scale
'''


@pytest.fixture
def power(load):
    return enhanced(load, POWER, "power_sum", DOMAIN)


def test_valid_arguments_pass_unchanged(power, load) -> None:
    assert power.power_sum(3, 1, 2, scale=0.5) == load(POWER).power_sum(3, 1, 2, scale=0.5) == 6.0
    assert power.power_sum(2**1000, 1) == float(2**1000)


def test_huge_ints_are_rejected_before_any_work(load) -> None:
    module = enhanced(load, POWER, "power_sum", DOMAIN, max_int_bits=64)
    assert module.power_sum(2**63, 1) == float(2**63)
    with pytest.raises(ValueError, match=r"argument 'base' has more than 64 bits \(max_int_bits\)"):
        module.power_sum(2**64, 1)
    with pytest.raises(ValueError, match=r"argument '\*exponents\[1\]' has more than 64 bits"):
        module.power_sum(2, 1, 2**70)
    assert module.power_sum.poet_metrics["rejected_inputs"] == 2


def test_large_containers_are_rejected(load) -> None:
    module = enhanced(load, POWER, "power_sum", DOMAIN, max_input_items=3)
    assert module.power_sum(2, 1, mode="abc") == 2.0
    with pytest.raises(ValueError, match=r"argument 'mode' has more than 3 items \(max_input_items\)"):
        module.power_sum(2, 1, mode="abcd")


def test_non_finite_floats_are_rejected(power) -> None:
    with pytest.raises(ValueError, match="finite"):
        power.power_sum(2, 1, scale=float("nan"))
    with pytest.raises(ValueError, match="result must be a finite number"):
        power.power_sum(10, 300, scale=1e300)  # 1e300 * 1e300 overflows to inf


def test_the_guard_is_off_at_zero() -> None:
    code = code_of(POWER, "power_sum", DOMAIN, max_int_bits=0, max_input_items=0)
    assert "input_size_guard" not in code.optimizations and "_poet_check_size" not in code.python


def test_generated_module_passes_the_gate() -> None:
    check_generated(POWER, code_of(POWER, "power_sum", DOMAIN).python, "power_sum")
