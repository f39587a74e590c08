"""building_management: setpoint limits and the heating/cooling interlock."""

from __future__ import annotations

import pytest

from poet_grpc.generator import AnalysisError, check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "building_management"

SET_ZONE = '''
def set_zone(zone: str, setpoint: float, heating: bool = False, cooling: bool = False) -> dict:
    return {"zone": zone, "setpoint": setpoint, "heating": heating, "cooling": cooling}
'''

PLAN = '''
def plan(target_temperature, outdoor):
    heat = outdoor < target_temperature
    return {"heating": heat, "cooling": outdoor > 30, "setpoint": target_temperature}
'''


@pytest.fixture
def zone(load):
    return enhanced(load, SET_ZONE, "set_zone", DOMAIN)


def test_valid_setpoints_pass_unchanged(zone, load) -> None:
    for args in (("a", 21.5), ("b", 10), ("c", 32.0, True), ("d", 18.0, False, True)):
        assert zone.set_zone(*args) == load(SET_ZONE).set_zone(*args)


@pytest.mark.parametrize("value", [9.9, 32.5, -5])
def test_setpoints_outside_the_limits_are_rejected(zone, value) -> None:
    with pytest.raises(ValueError, match=r"argument 'setpoint' is a setpoint and must lie in \[10.0, 32.0\]"):
        zone.set_zone("a", value)
    assert zone.set_zone.poet_metrics["rejected_inputs"] == 1


def test_nan_setpoints_are_rejected_even_without_the_finite_check(load) -> None:
    module = enhanced(load, SET_ZONE, "set_zone", DOMAIN, reject_non_finite_floats=False)
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="'setpoint' is a setpoint"):
            module.set_zone("a", value)


def test_limits_are_parameters(load) -> None:
    module = enhanced(load, SET_ZONE, "set_zone", DOMAIN, min_setpoint_c=16, max_setpoint_c=24)
    assert module.set_zone("a", 16)["setpoint"] == 16
    with pytest.raises(ValueError, match=r"\[16.0, 24.0\]"):
        module.set_zone("a", 25)
    with pytest.raises(AnalysisError):
        code_of(SET_ZONE, "set_zone", DOMAIN, min_setpoint_c=30, max_setpoint_c=20)


def test_heating_and_cooling_together_are_rejected(zone) -> None:
    with pytest.raises(ValueError, match="cannot heat and cool at once .'heating' and 'cooling' are both True"):
        zone.set_zone("a", 20.0, True, True)
    assert zone.set_zone("a", 20.0, True, False)["heating"] is True


def test_results_that_heat_and_cool_or_hold_an_unsafe_setpoint_are_rejected(load) -> None:
    module = enhanced(load, PLAN, "plan", DOMAIN, max_setpoint_c=40.0)  # only the result rule can catch these
    assert module.plan(20.0, 25.0) == {"heating": False, "cooling": False, "setpoint": 20.0}
    with pytest.raises(ValueError, match="result switches heating and cooling on at once"):
        module.plan(35.0, 31.0)
    assert module.plan.poet_metrics["rejected_outputs"] == 1
    strict = enhanced(load, PLAN, "plan", DOMAIN, setpoint_params=[])  # target_temperature no longer checked on input
    with pytest.raises(ValueError, match="result key 'setpoint' is a setpoint"):
        strict.plan(5.0, 0.0)


def test_readings_and_non_matching_functions_are_untouched(load) -> None:
    source = "def read(sensor: str) -> dict:\n    return {'temperature': -12.5, 'heating': True, 'cool': False}\n"
    module = enhanced(load, source, "read", DOMAIN)
    assert module.read("roof") == {"temperature": -12.5, "heating": True, "cool": False}
    plain = code_of("def add(a: int, b: int) -> int:\n    return a + b\n", "add", DOMAIN)
    assert "_poet_check_hvac_result" not in plain.python and "setpoint_limits" not in plain.optimizations


def test_generated_modules_pass_the_gate() -> None:
    for source, name in [(SET_ZONE, "set_zone"), (PLAN, "plan")]:
        check_generated(source, code_of(source, name, DOMAIN).python, name)
