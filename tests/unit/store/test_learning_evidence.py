"""The learning loop's evidence from the field: contract violations that enhanced code
reported (function.contract_violation) reach the regeneration of the version they concern."""

from __future__ import annotations

from poet_grpc.core import learning
from poet_grpc.core.learning_loop import _violations


def _violation(event, version: str, parameter: str, type_seen: str, *, function_name: str = "calc",
               timestamp: float = 2000.0):
    return event(
        learning.CONTRACT_VIOLATION, function_name=function_name, timestamp=timestamp,
        payload={"function_name": function_name, "version": version, "parameter": parameter,
                 "expected": "str", "type_seen": type_seen},
    )


def test_a_versions_violations_are_its_evidence_once_each(store, event, enhancement) -> None:
    store.append_events([enhancement("calc", 1), enhancement("calc", 2, timestamp=1500.0)])
    store.append_events([
        _violation(event, "v2", "sub", "NoneType"),
        _violation(event, "v2", "sub", "NoneType"),  # another process reports it again
        _violation(event, "v1", "sub", "int"),  # an older version's
        _violation(event, "v2", "sub", "bytes", function_name="other"),  # another function's
        _violation(event, "v2", "return", "list"),
    ])
    current = store.get_version("calc", "v2")
    assert _violations(store, current) == [
        {"parameter": "sub", "expected": "str", "type_seen": "NoneType"},
        {"parameter": "return", "expected": "str", "type_seen": "list"},
    ]
    finding = learning.Finding("high_error_rate", "error rate 40% over 25 executions", 25, 0.4, 0.2)
    evidence = learning.evidence(current, finding, [], _violations(store, current))
    assert evidence["contract_violations"][0]["type_seen"] == "NoneType"
    assert "contract_violations" not in learning.evidence(current, finding, [], [])


def test_hostile_reports_are_cut_and_bounded() -> None:
    from poet_grpc.core.models import EventRecord

    events = [
        EventRecord(id=f"e{i}", type=learning.CONTRACT_VIOLATION, source="field", timestamp=1.0,
                    payload={"version": "v1", "parameter": "p" * 10_000, "expected": ["not", "text"],
                             "type_seen": f"T{i}"})
        for i in range(100)
    ]
    found = learning.contract_violations(events, "v1")
    assert len(found) == learning.MAX_VIOLATIONS
    assert all(len(report["parameter"]) == 200 and isinstance(report["expected"], str) for report in found)
