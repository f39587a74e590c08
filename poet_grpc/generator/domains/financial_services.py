"""financial_services: money-handling functions.

Perceive, by signature:
- parameters annotated `decimal.Decimal` (also Optional[Decimal], string forms) are
  normalised: a Decimal passes as it is (the same object); a str is parsed exactly
  (Decimal(str), surrounding whitespace allowed); an int converts exactly; a float
  converts through its shortest repr, Decimal(repr(x)), so 0.1 becomes Decimal("0.1"),
  the decimal the float was written as, not its binary expansion
  0.1000000000000000055511151231257827...; None passes when the annotation allows it.
  NaN and infinities (float, str or Decimal) raise ValueError, a str that is not a
  number raises ValueError, a bool or any other type TypeError, each naming the parameter.
- money parameters (`money_params` name convention) must not be negative unless named
  in `signed_money_params`; rate parameters (`rate_params`, exact names) must lie in
  [min_rate, max_rate]. Both only check numbers (int, float, Decimal; not bool) and never
  convert a parameter that is not Decimal-annotated; NaN/infinite money or rates are
  rejected. Errors name the parameter, never the value.
Audit trail: see _shared.audit_parameters.
"""

from __future__ import annotations

from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator.domains._conventions import is_decimal, literal, name_matches
from poet_grpc.generator.domains._shared import audit_code, audit_parameters
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

DECIMAL_NORMALISATION = "decimal_normalisation"
AMOUNT_LIMITS = "amount_limits"

MONEY = '''
import decimal
import math
import numbers


def _poet_to_decimal(parameter, value, optional):
    """A Decimal-annotated argument as a Decimal (see the financial_services rules)."""
    if value is None and optional:
        return value
    if isinstance(value, decimal.Decimal):
        number = value
    elif isinstance(value, bool):
        raise TypeError(f"{_POET_FUNCTION}() argument {parameter!r} must be a Decimal, not bool")
    elif isinstance(value, int):
        number = decimal.Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} must be a finite number")
        number = decimal.Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError(
                f"{_POET_FUNCTION}() argument {parameter!r} must be a decimal number; the string given is not one"
            ) from None
    else:
        raise TypeError(
            f"{_POET_FUNCTION}() argument {parameter!r} must be a Decimal (or a str, int or float convertible "
            f"to one), not {type(value).__name__}"
        )
    if not number.is_finite():
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} must be a finite number")
    return value if number is value else number


def _poet_money_number(parameter, value):
    """The value as a number to check, or None when it is not one (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        return None
    finite = value.is_finite() if isinstance(value, decimal.Decimal) else math.isfinite(value)
    if not finite:
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} must be a finite number")
    return value


def _poet_check_amount(parameter, value):
    """A money argument must not be negative."""
    number = _poet_money_number(parameter, value)
    if number is not None and number < 0:
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} is an amount and must not be negative")


def _poet_check_signed_amount(parameter, value):
    """A signed money argument: any finite number."""
    _poet_money_number(parameter, value)


def _poet_check_rate(parameter, value):
    """A rate argument must lie in [min_rate, max_rate]."""
    number = _poet_money_number(parameter, value)
    if number is None:
        return
    low, high = _POET_PARAMS["min_rate"], _POET_PARAMS["max_rate"]
    if not low <= number <= high:
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} is a rate and must lie in [{low}, {high}]")
'''

MONEY_NAMES = ["amount", "price", "cost", "fee", "fees", "principal", "payment", "deposit", "withdrawal", "salary"]
RATE_NAMES = ["rate", "interest_rate", "annual_rate", "tax_rate", "discount_rate", "fee_rate", "apr", "apy"]


def code(target: Target) -> DomainCode:
    params = target.params
    if params["min_rate"] > params["max_rate"]:
        raise AnalysisError("config", "config 'min_rate' must not be greater than 'max_rate'")
    perceive: list[str] = []
    features: list[str] = []
    for p in target.named:
        decimal_annotated, optional = is_decimal(p, target)
        if decimal_annotated:
            perceive.append(f"{p.name} = _poet_to_decimal({literal(p.name)}, {p.name}, {optional})")
            features.append(DECIMAL_NORMALISATION)
        if p.name.lower() in [r.lower() for r in params["rate_params"]]:
            perceive.append(f"_poet_check_rate({literal(p.name)}, {p.name})")
            features.append(AMOUNT_LIMITS)
        elif name_matches(p.name, params["money_params"]):
            signed = p.name.lower() in [s.lower() for s in params["signed_money_params"]]
            check = "_poet_check_signed_amount" if signed else "_poet_check_amount"
            perceive.append(f"{check}({literal(p.name)}, {p.name})")
            features.append(AMOUNT_LIMITS)
    own = DomainCode(runtime=(MONEY,), perceive=tuple(perceive), perceive_features=tuple(dict.fromkeys(features)))
    if not perceive:
        own = DomainCode()
    return own + audit_code(target)


DOMAIN = DomainInfo(
    name="financial_services",
    description=(
        "Money-handling functions. The base reliability stages without automatic retries (a retried payment "
        "may execute twice: set max_retries only for idempotent calls) and with strict checks (container "
        "elements, NaN or infinite floats rejected). Perceive: Decimal-annotated parameters normalised (str and "
        "int exactly, float through its shortest repr; NaN, infinity and non-numbers rejected naming the "
        "parameter); money parameters (amount, price, cost, fee... by name) must not be negative and rates "
        "(rate, interest_rate, apr...) must lie in [min_rate, max_rate], checked only, never converted. An audit "
        "trail of every call (SHA-256 digests of arguments and result, never raw values) in "
        "<function>.poet_audit and as audit.recorded events."
    ),
    parameters=reliability_parameters(max_retries=0, check_element_types=True, reject_non_finite_floats=True)
    + (
        DomainParam(
            "money_params",
            "Name convention of money parameters that must not be negative (an entry matches the name itself, "
            "entry_* and *_entry: amount matches total_amount).",
            MONEY_NAMES,
        ),
        DomainParam(
            "signed_money_params", "Exact names of money parameters that may be negative (refunds, adjustments).", []
        ),
        DomainParam(
            "rate_params",
            "Exact names of rate parameters checked against [min_rate, max_rate] (rates as fractions: 0.05 is 5%).",
            RATE_NAMES,
        ),
        DomainParam("min_rate", "Lowest rate accepted (negative rates exist).", -1.0),
        DomainParam("max_rate", "Highest rate accepted (1.0 = 100%; set 100 for functions taking percentages).", 1.0),
    )
    + audit_parameters(True),
    code=code,
)
