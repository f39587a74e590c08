"""building_management: building automation (HVAC setpoints, sensors).

Perceive, by signature:
- setpoint parameters (a name containing "setpoint", or one of `setpoint_params`:
  temperature, temp_c, target_temperature...) given a number (int, float or Decimal, not
  bool) must lie in [min_setpoint_c, max_setpoint_c] (NaN fails); else ValueError naming
  the parameter.
- heating and cooling at once: when a parameter named in `heating_params` and one in
  `cooling_params` are both True (the bool True, not just truthy), ValueError.
Enforce: a dict result whose heating key and cooling key (same names) are both True is
rejected with ValueError, as is a number under a key containing "setpoint" outside the
limits (result keys such as "temperature" are readings, not setpoints: not checked). The
result rule is generated unless the return annotation names a type other than dict.
"""

from __future__ import annotations

import ast

from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator.domains._conventions import literal, qualified
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

SETPOINT_LIMITS = "setpoint_limits"
HEAT_COOL_INTERLOCK = "heat_cool_interlock"

HVAC = '''
import decimal
import numbers


def _poet_check_setpoint(what, value):
    """A setpoint (a number) must lie in [min_setpoint_c, max_setpoint_c]."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        return
    low, high = _POET_PARAMS["min_setpoint_c"], _POET_PARAMS["max_setpoint_c"]
    if not low <= value <= high:
        raise ValueError(f"{_POET_FUNCTION}() {what} is a setpoint and must lie in [{low}, {high}] degrees C")


def _poet_check_heat_cool(heating, cooling):
    """Heating and cooling must not both be on: (name, value) pairs of each kind."""
    heat = [name for name, value in heating if value is True]
    cool = [name for name, value in cooling if value is True]
    if heat and cool:
        raise ValueError(f"{_POET_FUNCTION}() cannot heat and cool at once ({heat[0]!r} and {cool[0]!r} are both True)")


def _poet_check_hvac_result(result):
    """Enforce: a dict result must not switch heating and cooling on together, nor hold an unsafe setpoint."""
    if not isinstance(result, dict):
        return
    heating = [str(k).lower() for k in _POET_PARAMS["heating_params"]]
    cooling = [str(k).lower() for k in _POET_PARAMS["cooling_params"]]
    heat = cool = False
    for key, value in result.items():
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        if value is True and lowered in heating:
            heat = True
        elif value is True and lowered in cooling:
            cool = True
        elif "setpoint" in lowered:
            _poet_check_setpoint(f"result key {key!r}", value)
    if heat and cool:
        raise ValueError(f"{_POET_FUNCTION}() result switches heating and cooling on at once")
'''

SETPOINT_NAMES = [
    "temperature",
    "temp_c",
    "temperature_c",
    "target_temperature",
    "target_temp",
    "target_temp_c",
    "desired_temperature",
]
HEATING_NAMES = ["heating", "heat", "heating_on", "heat_on", "heating_enabled", "enable_heating"]
COOLING_NAMES = ["cooling", "cool", "cooling_on", "cool_on", "cooling_enabled", "enable_cooling"]


def _pairs(names: list[str]) -> str:
    return "(" + "".join(f"({literal(n)}, {n}), " for n in names) + ")"


def _may_return_dict(target: Target) -> bool:
    """False only when the return annotation names a builtin or typing type other than dict."""
    node = target.returns
    if isinstance(node, ast.Subscript):
        node = node.value
    origin = qualified(node, target) if node is not None else None
    if origin is None or not origin.startswith(("builtins.", "typing.")):
        return True
    return origin in ("builtins.dict", "typing.Dict", "typing.Mapping", "typing.MutableMapping", "typing.Any")


def code(target: Target) -> DomainCode:
    params = target.params
    if params["min_setpoint_c"] > params["max_setpoint_c"]:
        raise AnalysisError("config", "config 'min_setpoint_c' must not be greater than 'max_setpoint_c'")
    setpoints = [s.lower() for s in params["setpoint_params"]]
    heating = [s.lower() for s in params["heating_params"]]
    cooling = [s.lower() for s in params["cooling_params"]]
    perceive: list[str] = []
    features: list[str] = []  # of the perceive part
    for p in target.named:
        lowered = p.name.lower()
        if "setpoint" in lowered or lowered in setpoints:
            perceive.append(f"_poet_check_setpoint({literal('argument ' + repr(p.name))}, {p.name})")
            features.append(SETPOINT_LIMITS)
    heat = [p.name for p in target.named if p.name.lower() in heating]
    cool = [p.name for p in target.named if p.name.lower() in cooling]
    if heat and cool:
        perceive.append(f"_poet_check_heat_cool({_pairs(heat)}, {_pairs(cool)})")
        features.append(HEAT_COOL_INTERLOCK)
    enforce: tuple[str, ...] = ()
    if _may_return_dict(target):
        enforce = ("_poet_check_hvac_result(_poet_result)",)
    if not perceive and not enforce:
        return DomainCode()
    return DomainCode(
        runtime=(HVAC,),
        perceive=tuple(perceive),
        enforce=enforce,
        perceive_features=tuple(dict.fromkeys(features)),
        enforce_features=(SETPOINT_LIMITS, HEAT_COOL_INTERLOCK),
    )


DOMAIN = DomainInfo(
    name="building_management",
    description=(
        "Building automation (HVAC setpoints, sensor reads). The base reliability stages tuned for device I/O: "
        "a 10 s deadline, backoff from 0.5 s, NaN or infinite values rejected on float-annotated arguments and "
        "results. Safe setpoints: parameters named like *setpoint*, temperature or temp_c must lie in "
        "[min_setpoint_c, max_setpoint_c] (ValueError naming the parameter). No heating and cooling at once: "
        "bool parameters heating and cooling (heat/cool, heating_on/cooling_on...) both True raise ValueError, "
        "and a dict result with both True (or an out-of-range value under a *setpoint* key) is rejected."
    ),
    parameters=reliability_parameters(timeout_seconds=10.0, backoff_base_seconds=0.5, reject_non_finite_floats=True)
    + (
        DomainParam("min_setpoint_c", "Lowest temperature setpoint accepted, in degrees Celsius.", 10.0, -273.15),
        DomainParam("max_setpoint_c", "Highest temperature setpoint accepted, in degrees Celsius.", 32.0, -273.15),
        DomainParam(
            "setpoint_params",
            "Exact names of setpoint parameters, besides any name containing 'setpoint'.",
            SETPOINT_NAMES,
        ),
        DomainParam("heating_params", "Exact names of heating switches (parameters and result keys).", HEATING_NAMES),
        DomainParam("cooling_params", "Exact names of cooling switches (parameters and result keys).", COOLING_NAMES),
    ),
    code=code,
)
