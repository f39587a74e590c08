"""financial_services: Decimal normalisation, amount and rate limits, the audit trail."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from unit.generator.section_support import set_original

from poet_grpc.generator import AnalysisError, check_generated
from unit.generator.domain_support import capture, code_of, enhanced

DOMAIN = "financial_services"

CHARGE = '''
from decimal import Decimal


def charge(amount: Decimal, rate: float = 0.0, *, memo: str = "") -> Decimal:
    """Amount plus interest, rounded to cents."""
    return (amount * (1 + Decimal(str(rate)))).quantize(Decimal("0.01"))
'''

TRANSFER = '''
import decimal


def transfer(total_amount, fee: "decimal.Decimal | None" = None, adjustment=0):
    return (total_amount, fee, adjustment)
'''


@pytest.fixture
def charge(load):
    return enhanced(load, CHARGE, "charge", DOMAIN)


# --- Decimal normalisation ----------------------------------------------------------------


def test_valid_decimals_pass_unchanged(charge, load) -> None:
    original = load(CHARGE)
    amount = Decimal("12.50")
    assert charge.charge(amount, 0.1) == original.charge(amount, 0.1) == Decimal("13.75")
    seen = []
    set_original(charge.charge, lambda amount, rate, memo: seen.append(amount) or amount)
    charge.charge(amount)
    assert seen[0] is amount  # the same object, not a copy


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("12.50", Decimal("12.50")),
        (" 7 ", Decimal("7")),
        (12, Decimal("12")),
        (0.1, Decimal("0.1")),  # the float's shortest repr, not 0.1000000000000000055511...
        (1e20, Decimal("1E+20")),
    ],
)
def test_str_int_and_float_become_decimal_exactly(charge, given, expected) -> None:
    seen = []
    set_original(charge.charge, lambda amount, rate, memo: seen.append(amount) or amount)
    charge.charge(given)
    assert isinstance(seen[0], Decimal) and seen[0] == expected and str(seen[0]) == str(expected)


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ("twelve", ValueError, "argument 'amount' must be a decimal number"),
        ("NaN", ValueError, "argument 'amount' must be a finite number"),
        ("-Infinity", ValueError, "finite"),
        (float("inf"), ValueError, "finite"),
        (Decimal("NaN"), ValueError, "finite"),
        (True, TypeError, "argument 'amount' must be a Decimal, not bool"),
        ([1], TypeError, "argument 'amount' must be a Decimal .* not list"),
    ],
)
def test_invalid_decimals_are_rejected_naming_the_parameter(charge, given, error, message) -> None:
    with pytest.raises(error, match=message):
        charge.charge(given)
    assert charge.charge.poet_metrics["rejected_inputs"] == 1


def test_optional_decimal_allows_none_and_other_annotations_are_never_converted(load) -> None:
    module = enhanced(load, TRANSFER, "transfer", DOMAIN)
    assert module.transfer("5", None) == ("5", None, 0)  # total_amount is not Decimal-annotated: checked only
    assert module.transfer(5, "0.25") == (5, Decimal("0.25"), 0)
    assert "decimal_normalisation" in code_of(TRANSFER, "transfer", DOMAIN).optimizations


# --- amounts and rates --------------------------------------------------------------------


def test_negative_amounts_are_rejected(charge, load) -> None:
    with pytest.raises(ValueError, match="argument 'amount' is an amount and must not be negative") as caught:
        charge.charge("-1.00")
    assert "-1" not in str(caught.value)  # the parameter, never the value
    module = enhanced(load, TRANSFER, "transfer", DOMAIN)
    with pytest.raises(ValueError, match="'total_amount'"):
        module.transfer(-3)
    with pytest.raises(ValueError, match="'total_amount' must be a finite number"):
        module.transfer(float("nan"))
    assert module.transfer(0) == (0, None, 0)
    assert module.transfer("not a number") == ("not a number", None, 0)  # not a number: not its business


def test_signed_money_params_may_be_negative(load) -> None:
    source = "def book(amount, refund_amount):\n    return amount - refund_amount\n"
    module = enhanced(load, source, "book", DOMAIN, signed_money_params=["refund_amount"])
    assert module.book(10, -2) == 12
    with pytest.raises(ValueError, match="'amount'"):
        module.book(-10, 2)


def test_rates_must_lie_within_the_limits(charge, load) -> None:
    assert charge.charge("100", 0.05) == Decimal("105.00")
    with pytest.raises(ValueError, match=r"argument 'rate' is a rate and must lie in \[-1.0, 1.0\]"):
        charge.charge("100", 5)
    percent = enhanced(load, CHARGE, "charge", DOMAIN, max_rate=100.0)
    assert percent.charge("1", 5) == Decimal("6.00")
    with pytest.raises(AnalysisError) as caught:
        code_of(CHARGE, "charge", DOMAIN, min_rate=2.0)
    assert caught.value.field == "config"


# --- audit trail ----------------------------------------------------------------------------


def test_every_call_is_audited_with_digests_only(charge) -> None:
    events = capture(charge)
    charge.charge("12.50", 0.1, memo="secret memo")
    with pytest.raises(ValueError):
        charge.charge("-5")
    audit = list(charge.charge.poet_audit)
    assert [e["outcome"] for e in audit] == ["success", "error"]
    ok, failed = audit
    assert set(ok) == {
        "execution_id",
        "timestamp",
        "function",
        "domain",
        "version",
        "arguments_sha256",
        "outcome",
        "error_type",
        "result_sha256",
    }
    assert ok["function"] == "charge" and ok["domain"] == DOMAIN and ok["version"] == ""
    arguments = (("amount", "12.50"), ("rate", 0.1), ("memo", "secret memo"))  # as received
    assert ok["arguments_sha256"] == hashlib.sha256(repr(arguments).encode()).hexdigest()
    assert ok["result_sha256"] == hashlib.sha256(repr(Decimal("13.75")).encode()).hexdigest()
    assert ok["error_type"] is None
    assert failed["error_type"] == "ValueError" and failed["result_sha256"] is None
    assert "secret memo" not in repr(audit) and "12.50" not in repr(audit)
    assert [(t, p) for t, p, _ in events] == [("audit.recorded", ok), ("audit.recorded", failed)]
    assert events[0][2] == {"correlation_id": ok["execution_id"]}


def test_the_audit_log_is_bounded_and_can_be_switched_off(load) -> None:
    module = enhanced(load, CHARGE, "charge", DOMAIN, audit_log_size=3)
    for _ in range(5):
        module.charge("1")
    assert len(module.charge.poet_audit) == 3
    off = code_of(CHARGE, "charge", DOMAIN, audit_log=False)
    assert "audit_trail" not in off.optimizations and "poet_audit" not in off.python


# --- where it does not apply ------------------------------------------------------------------


def test_functions_without_money_parameters_only_get_the_audit(load) -> None:
    source = "def greet(name: str, times: int = 1) -> str:\n    return ' '.join(['hi ' + name] * times)\n"
    code = code_of(source, "greet", DOMAIN)
    assert code.optimizations[-1:] == ("audit_trail",)
    assert "_poet_check_amount" not in code.python and "_poet_to_decimal" not in code.python
    module = enhanced(load, source, "greet", DOMAIN)
    assert module.greet("bob", 2) == load(source).greet("bob", 2)


def test_generated_modules_pass_the_gate() -> None:
    for source, name in [(CHARGE, "charge"), (TRANSFER, "transfer")]:
        check_generated(source, code_of(source, name, DOMAIN).python, name)
