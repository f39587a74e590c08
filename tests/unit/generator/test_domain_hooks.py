"""The domain hook mechanism (poet_grpc.generator._domain_code): how domain code is placed,
guarded and isolated, for every domain."""

from __future__ import annotations

from decimal import Decimal

import pytest

from poet_grpc.generator import DOMAINS, check_generated
from unit.generator.domain_support import code_of, enhanced

PLAIN = '''
def mean(values: list, weight: float = 1.0) -> float:
    """Weighted mean."""
    return sum(values) / len(values) * weight
'''

EVERYTHING = '''
from decimal import Decimal


def handle(reference: list[float], current: list[float], amount: Decimal, patient_id: str, setpoint: float,
           file_name: str, prompt: str, template: str, rows: list[dict], **values) -> dict:
    return {"n": len(rows), "amount": amount, "text": template.format(**values)}
'''

EVERYTHING_ARGS = (
    [1.0, 2.0, 3.0],
    [1.0, 2.0, 3.5],
    Decimal("10.00"),
    "P-1",
    21.0,
    "notes.txt",
    "Say hi",
    "Hi {who}",
    [{"a": 1}],
)


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_domain_leaves_valid_results_alone(domain, load) -> None:
    module = enhanced(load, PLAIN, "mean", domain)
    original = load(PLAIN)
    for args in (([1, 2, 3],), ([1.5, 2.5], 2.0), ([7],)):
        assert module.mean(*args) == original.mean(*args)
    with pytest.raises(ZeroDivisionError):
        module.mean([])


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_domain_on_a_function_matching_everything(domain, load) -> None:
    code = code_of(EVERYTHING, "handle", domain)
    check_generated(EVERYTHING, code.python, "handle")
    module = load(code.python)
    expected = load(EVERYTHING).handle(*EVERYTHING_ARGS, who="you")
    assert module.handle(*EVERYTHING_ARGS, who="you") == expected


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_generation_is_deterministic(domain) -> None:
    first = code_of(EVERYTHING, "handle", domain).python
    again = code_of(EVERYTHING, "handle", domain, unused=1).python  # a second, uncached generation
    assert first == again.replace('        "unused": 1,\n', "")


def test_domain_helpers_bind_builtins_locally(load) -> None:
    # The module rebinds len and sorted (used by the ml_monitoring helpers): the helpers keep the builtins.
    source = (
        "def len(x):\n    return -1\n\n\nsorted = None\n\n\n"
        "def drift(reference: list[float], current: list[float]) -> int:\n    return len(current)\n"
    )
    code = code_of(source, "drift", "ml_monitoring")
    assert "from builtins import" in code.python
    module = load(code.python)
    events = []
    module._poet_emit = lambda t, p, **kw: events.append(t)
    assert module.drift([1.0, 2.0], [5.0, 6.0]) == -1
    assert events == ["drift.detected", "monitoring.completed"]


def test_domain_input_and_output_rules_follow_validate_inputs_and_outputs() -> None:
    on = code_of(EVERYTHING, "handle", "financial_services")
    off = code_of(EVERYTHING, "handle", "financial_services", validate_inputs=False)
    assert "decimal_normalisation" in on.optimizations and "decimal_normalisation" not in off.optimizations
    assert "_poet_to_decimal(" in on.python.split("    def handle(")[-1]
    assert "_poet_to_decimal(" not in off.python.split("    def handle(")[-1]
    assert "audit_trail" in off.optimizations  # not an input rule
    hvac = code_of(EVERYTHING, "handle", "building_management", validate_inputs=False, validate_outputs=False)
    assert "setpoint_limits" not in hvac.optimizations


def test_domain_features_do_not_change_the_safety_level() -> None:
    base = code_of(PLAIN, "mean", "financial_services", audit_log=False)
    audited = code_of(PLAIN, "mean", "financial_services")
    assert "audit_trail" in audited.optimizations and audited.safety_level == base.safety_level <= 1.0


def test_a_domain_hook_that_fails_never_changes_the_outcome(load) -> None:
    module = enhanced(load, EVERYTHING, "handle", "ml_monitoring")

    def broken(*args, **kwargs):
        raise RuntimeError("statistics broke")

    module._poet_monitor_drift = broken
    assert module.handle(*EVERYTHING_ARGS, who="x")["n"] == 1


def test_bad_domain_config_is_an_analysis_error() -> None:
    from poet_grpc.generator import AnalysisError

    for domain, config in [
        ("ml_monitoring", {"drift_method": "t_test"}),
        ("ml_monitoring", {"psi_bins": 1}),
        ("financial_services", {"money_params": ["amount", 3]}),
        ("healthcare", {"redaction_min_chars": 0}),
        ("llm_optimization", {"transient_status_codes": ["429"]}),
    ]:
        with pytest.raises(AnalysisError) as caught:
            code_of(PLAIN, "mean", domain, **config)
        assert caught.value.field == "config"
