"""healthcare: identifier values redacted from exceptions (same object, same type), metrics
and events; the audit trail keeps digests only."""

from __future__ import annotations

import traceback

import pytest

from unit.generator.section_support import set_original

from poet_grpc.generator import check_generated
from unit.generator.domain_support import capture, code_of, enhanced

DOMAIN = "healthcare"

ADMIT = '''
class AdmissionError(Exception):
    pass


def admit(patient_id: str, ward: str, patient_name: str = "", **details) -> str:
    if ward == "closed":
        raise AdmissionError(f"cannot admit {patient_name} ({patient_id}) to {ward}", patient_id)
    if ward == "lookup":
        return {"P-1": "bed 1"}[patient_id]
    if ward == "chained":
        try:
            raise KeyError(details["email"])
        except KeyError as inner:
            raise RuntimeError(f"record for {details['email']} is broken") from inner
    if ward == "file":
        raise FileNotFoundError(2, "No such file", f"/records/{patient_id}.json")
    return f"{patient_id} -> {ward}"
'''

RECORD = '''
def update(record: dict, mrn: int) -> None:
    raise ValueError(f"invalid record {record!r} for mrn {mrn}")
'''


@pytest.fixture
def admit(load):
    return enhanced(load, ADMIT, "admit", DOMAIN)


def test_valid_calls_are_unchanged(admit, load) -> None:
    assert admit.admit("P-77", "north") == load(ADMIT).admit("P-77", "north") == "P-77 -> north"


def test_identifiers_are_redacted_from_the_same_exception_object(admit) -> None:
    raised = []
    original = admit._poet_original_admit

    def spy(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except BaseException as error:
            raised.append(error)
            raise

    set_original(admit.admit, spy)
    with pytest.raises(admit.AdmissionError) as caught:
        admit.admit("P-12345", "closed", patient_name="Jane Doe")
    assert caught.value is raised[0]  # same object, same type
    assert caught.value.args == ("cannot admit [REDACTED] ([REDACTED]) to closed", "[REDACTED]")
    text = "".join(traceback.format_exception_only(caught.value))  # what a log shows of the error
    assert "P-12345" not in text and "Jane Doe" not in text and "to closed" in text


def test_key_errors_chains_notes_and_os_errors_are_redacted(admit) -> None:
    with pytest.raises(KeyError) as caught:
        admit.admit("P-999", "lookup")
    assert caught.value.args == ("[REDACTED]",)
    with pytest.raises(RuntimeError) as chained:
        admit.admit("P-1", "chained", email="jane@example.org")
    assert str(chained.value) == "record for [REDACTED] is broken"
    assert chained.value.__cause__.args == ("[REDACTED]",)  # the chain is kept, redacted too
    with pytest.raises(FileNotFoundError) as missing:
        admit.admit("P-4242", "file")
    assert "P-4242" not in str(missing.value) and missing.value.filename == "/records/[REDACTED].json"


def test_values_under_identifier_keys_of_mapping_arguments_are_redacted(load) -> None:
    module = enhanced(load, RECORD, "update", DOMAIN)
    with pytest.raises(ValueError) as caught:
        module.update({"name": "John O'Hara", "ward": "east"}, 998877)
    message = str(caught.value)
    assert "John" not in message and "998877" not in message and "'ward': 'east'" in message
    assert message.count("[REDACTED]") == 2


def test_metrics_and_events_never_carry_the_message(admit) -> None:
    events = capture(admit)
    with pytest.raises(admit.AdmissionError):
        admit.admit("P-31337", "closed", patient_name="Ann Lee")
    assert admit.admit.poet_metrics["last_error"] == "AdmissionError"
    assert "P-31337" not in repr(admit.admit.poet_metrics)
    assert [e[0] for e in events] == ["audit.recorded"]
    assert "P-31337" not in repr(events) and "Ann Lee" not in repr(events)
    assert events[0][1]["error_type"] == "AdmissionError"
    assert "P-31337" not in repr(list(admit.admit.poet_audit))


def test_short_values_and_non_identifiers_are_left_alone(load) -> None:
    source = "def check(name: str, code: str) -> None:\n    raise ValueError(f'{name}/{code}')\n"
    module = enhanced(load, source, "check", DOMAIN)
    with pytest.raises(ValueError, match=r"^A/XYZ-1$"):  # "A" is shorter than redaction_min_chars
        module.check("A", "XYZ-1")
    with pytest.raises(ValueError, match=r"^\[REDACTED\]/XYZ-1$"):
        module.check("Al", "XYZ-1")


def test_redaction_can_be_switched_off_and_conventions_changed(load) -> None:
    off = enhanced(load, RECORD, "update", DOMAIN, phi_redaction=False)
    with pytest.raises(ValueError, match="998877"):
        off.update({}, 998877)
    custom = enhanced(load, "def f(badge):\n    raise KeyError(badge)\n", "f", DOMAIN, identifier_params=["badge"])
    with pytest.raises(KeyError) as caught:
        custom.f("B-7")
    assert caught.value.args == ("[REDACTED]",)


def test_functions_without_parameters_only_get_the_audit() -> None:
    code = code_of("def now() -> int:\n    return 1\n", "now", DOMAIN)
    assert "identifier_redaction" not in code.optimizations and "audit_trail" in code.optimizations


def test_generated_modules_pass_the_gate() -> None:
    for source, name in [(ADMIT, "admit"), (RECORD, "update")]:
        check_generated(source, code_of(source, name, DOMAIN).python, name)
