"""computation: numeric and CPU-bound functions.

Besides the base stages' NaN/infinity rejection on float-annotated arguments and
results (reject_non_finite_floats, on here), a size guard in Perceive, on every
parameter (each *args item and **kwargs value too), whatever its annotation:
- an int (not bool) with more than max_int_bits bits raises ValueError naming the
  parameter (a 10**100000-sized argument would make is_prime or factorial run for hours);
- a str, bytes, list, tuple, dict, set or frozenset with more than max_input_items
  items raises ValueError naming the parameter.
Each limit is off at 0.
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import literal
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

SIZE_GUARD = "input_size_guard"

SIZES = '''
def _poet_check_size(parameter, value):
    """Perceive: ints within max_int_bits, containers and strings within max_input_items (0: off)."""
    if isinstance(value, int) and not isinstance(value, bool):
        bits = _POET_PARAMS["max_int_bits"]
        if bits and value.bit_length() > bits:
            raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} has more than {bits} bits (max_int_bits)")
    elif isinstance(value, (str, bytes, bytearray, list, tuple, dict, set, frozenset)):
        items = _POET_PARAMS["max_input_items"]
        if items and len(value) > items:
            raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} has more than {items} items (max_input_items)")


def _poet_check_sizes(parameter, values):
    """_poet_check_size for each *args item or **kwargs value."""
    if isinstance(values, dict):
        for key, value in values.items():
            _poet_check_size(key, value)
    else:
        for index, value in enumerate(values):
            _poet_check_size(f"{parameter}[{index}]", value)
'''


def code(target: Target) -> DomainCode:
    params = target.params
    if not (params["max_int_bits"] or params["max_input_items"]) or not target.parameters:
        return DomainCode()
    perceive = tuple(
        f"{'_poet_check_size' if p.named else '_poet_check_sizes'}({literal(p.label)}, {p.name})"
        for p in target.parameters
    )
    return DomainCode(runtime=(SIZES,), perceive=perceive, perceive_features=(SIZE_GUARD,))


DOMAIN = DomainInfo(
    name="computation",
    description=(
        "Numeric and CPU-bound functions. The base reliability stages with settings for pure computation: one "
        "retry (computation rarely fails transiently), a 60 s deadline, and NaN or infinite floats rejected on "
        "float-annotated arguments and results. A size guard on every argument: ints longer than max_int_bits "
        "bits and strings or containers with more than max_input_items items are rejected with ValueError "
        "naming the parameter, before any work starts."
    ),
    parameters=reliability_parameters(max_retries=1, timeout_seconds=60.0, reject_non_finite_floats=True)
    + (
        DomainParam(
            "max_int_bits", "Largest int argument accepted, in bits (100000 bits: ~30103 digits); 0: off.", 100_000, 0
        ),
        DomainParam(
            "max_input_items",
            "Most items (characters for str) a container or str argument may have; 0: off.",
            10_000_000,
            0,
        ),
    ),
    code=code,
)
