"""Projections: versions, metrics, idempotency records, rebuild, durability."""

from __future__ import annotations

import pytest

from poet_grpc.core.models import VersionMetrics
from poet_grpc.store import BaseStore, StoredRequest, StoreError


def _snapshot(store: BaseStore) -> dict[str, list[tuple]]:
    """Every projection row, in a stable order."""
    return {
        table: store._rows(f"SELECT * FROM {table} ORDER BY 1, 2")
        for table in ("functions", "versions", "metrics", "requests")
    }


def test_enhancement_creates_a_current_version(store: BaseStore, enhancement) -> None:
    assert store.next_version_number("calc") == 1
    assert store.current_version("calc") is None
    store.append_events([enhancement("calc", 1, timestamp=500.0, content_hash="h1")])

    v = store.get_version("calc", "v1")
    assert v is not None
    assert (v.function_name, v.version, v.number, v.created_at, v.status) == ("calc", "v1", 1, 500.0, "active")
    assert v.current is True
    assert v.content_hash == "h1" and v.parent_version == ""
    assert v.spec.original_code.startswith("def calc")
    assert v.spec.context == {"imports": ["math"], "environment": "test"}
    assert v.spec.config == {"retries": 3}
    assert (v.spec.domain, v.spec.optimize_for) == ("base_reliability", "reliability")
    assert v.code.optimizations == ("retry", "timeout")
    assert v.code.params == {"retries": 3, "timeout": 1.5}
    assert (v.code.safety_level, v.code.generator) == (0.8, "template")
    assert v.metrics == VersionMetrics()
    assert store.current_version("calc") == "v1"
    assert store.next_version_number("calc") == 2
    assert store.next_version_number("other") == 1


def test_newest_version_becomes_current(store: BaseStore, enhancement) -> None:
    store.append_events([enhancement("calc", 1)])
    store.append_events([enhancement("calc", 2, timestamp=2000.0)])
    assert store.current_version("calc") == "v2"
    assert store.get_version("calc", "v1").current is False
    assert store.get_version("calc", "v2").current is True
    assert store.get_version("calc", "v2").parent_version == "v1"
    assert store.get_version("calc", "v3") is None
    assert store.next_version_number("calc") == 3
    assert store._rows("SELECT created_at, updated_at FROM functions") == [(1000.0, 2000.0)]


def test_duplicate_version_number_is_rejected(store: BaseStore, enhancement, event) -> None:
    store.append_events([enhancement("calc", 1, content_hash="h1")])
    with pytest.raises(StoreError, match="already has version number 1"):
        store.append_events([event(id="x"), enhancement("calc", 1, content_hash="h2")])
    assert store.last_position() == 1
    assert store.get_version("calc", "v1").content_hash == "h1"


def test_find_version_by_hash(store: BaseStore, enhancement) -> None:
    store.append_events([
        enhancement("calc", 1, content_hash="aaa"),
        enhancement("calc", 2, content_hash="bbb"),
        enhancement("parse", 1, content_hash="aaa"),
    ])
    assert store.find_version_by_hash("calc", "bbb").version == "v2"
    assert store.find_version_by_hash("calc", "aaa").version == "v1"
    assert store.find_version_by_hash("parse", "aaa").function_name == "parse"
    assert store.find_version_by_hash("parse", "bbb") is None


def test_list_versions_paging(store: BaseStore, enhancement) -> None:
    store.append_events([enhancement("calc", n) for n in range(1, 6)])
    store.append_events([enhancement("parse", 1)])
    assert [v.number for v in store.list_versions("calc")] == [1, 2, 3, 4, 5]
    page = store.list_versions("calc", limit=2)
    assert [v.version for v in page] == ["v1", "v2"]
    page = store.list_versions("calc", after_number=page[-1].number, limit=2)
    assert [v.version for v in page] == ["v3", "v4"]
    assert [v.current for v in store.list_versions("calc", after_number=3)] == [False, True]
    assert store.list_versions("calc", after_number=5) == []
    assert store.list_versions("nobody") == []


def test_feedback_metrics(store: BaseStore, enhancement, feedback) -> None:
    store.append_events([enhancement("calc", 1), enhancement("calc", 2)])
    store.append_events([
        feedback("calc", "v1", rating=5),
        feedback("calc", "v1"),  # rating absent
        feedback("calc", "v1", rating=None, metrics={"success_rate": 0.9, "avg_duration": 12.5,
                                                     "error_rate": 0.1}),
        feedback("calc", "v1", rating=2),
        feedback("calc", "v1", rating=4.5, metrics={"success_rate": 0.7, "avg_duration": 20.0,
                                                    "error_rate": 0.3}),
    ])
    m = store.get_version("calc", "v1").metrics
    assert m.feedback_count == 5
    assert m.rating_count == 3
    assert m.avg_rating == pytest.approx((5 + 2 + 4.5) / 3)
    assert (m.success_rate, m.avg_duration, m.error_rate) == (0.7, 20.0, 0.3)  # latest wins
    assert store.get_version("calc", "v2").metrics == VersionMetrics()  # other version untouched


def test_feedback_without_metrics_keeps_reported_rates(store: BaseStore, enhancement, feedback) -> None:
    store.append_events([enhancement("calc", 1)])
    store.append_events([feedback("calc", "v1", metrics={"success_rate": 0.5, "avg_duration": 3.0,
                                                         "error_rate": 0.5})])
    store.append_events([feedback("calc", "v1", rating=3)])
    m = store.get_version("calc", "v1").metrics
    assert (m.success_rate, m.avg_duration, m.error_rate) == (0.5, 3.0, 0.5)
    assert (m.feedback_count, m.rating_count, m.avg_rating) == (2, 1, 3.0)


def test_feedback_for_unknown_version_is_rejected(store: BaseStore, enhancement, feedback) -> None:
    store.append_events([enhancement("calc", 1)])
    with pytest.raises(StoreError):
        store.append_events([feedback("calc", "v2", rating=1)])
    with pytest.raises(StoreError):
        store.append_events([feedback("ghost", "v1")])
    assert store.last_position() == 1
    assert store.get_version("calc", "v1").metrics.feedback_count == 0


def test_other_event_types_change_no_projection(store: BaseStore, enhancement, event) -> None:
    store.append_events([enhancement("calc", 1)])
    before = _snapshot(store)
    store.append_events([event("external.alert", function_name="calc",
                               payload={"function_name": "calc", "version": "v1"})])
    assert store.last_position() == 2
    assert _snapshot(store) == before


def test_idempotency_records(store: BaseStore, enhancement, feedback) -> None:
    assert store.get_request("r1") is None
    enh = enhancement("calc", 1, request_id="r1", request_fingerprint="fp1")
    fb = feedback("calc", "v1", rating=4, request_id="r2", request_fingerprint="fp2")
    store.append_events([enh, fb, feedback("calc", "v1", request_id="")])
    assert store.get_request("r1") == StoredRequest(
        "r1", "enhancement.completed", "fp1", {"function_name": "calc", "version": "v1"}
    )
    assert store.get_request("r2") == StoredRequest(
        "r2", "function.feedback", "fp2", {"feedback_id": fb.id}
    )
    assert store._rows("SELECT COUNT(*) FROM requests") == [(2,)]


def test_request_id_recorded_twice_is_rejected(store: BaseStore, enhancement, feedback) -> None:
    store.append_events([enhancement("calc", 1, request_id="r1", request_fingerprint="fp")])
    with pytest.raises(StoreError, match="already recorded"):
        store.append_events([feedback("calc", "v1", request_id="r1", request_fingerprint="fp")])
    assert store.get_version("calc", "v1").metrics.feedback_count == 0


def _busy_history(store: BaseStore, event, enhancement, feedback) -> None:
    store.append_events([
        enhancement("calc", 1, request_id="r1", request_fingerprint="f1", timestamp=10.0),
        feedback("calc", "v1", rating=3, timestamp=11.0, request_id="r2", request_fingerprint="f2"),
        event("external.alert", function_name="calc", timestamp=12.0),
    ])
    store.append_events([
        enhancement("calc", 2, timestamp=20.0),
        enhancement("parse", 1, timestamp=21.0, content_hash="p"),
        feedback("calc", "v2", rating=1, timestamp=22.0,
                 metrics={"success_rate": 0.2, "avg_duration": 9.0, "error_rate": 0.8}),
        feedback("calc", "v1", timestamp=23.0),
        feedback("parse", "v1", rating=5, timestamp=24.0),
    ])


def test_rebuild_gives_identical_projections(store: BaseStore, event, enhancement, feedback) -> None:
    _busy_history(store, event, enhancement, feedback)
    live = _snapshot(store)
    live_versions = store.list_versions("calc") + store.list_versions("parse")
    assert all(live.values())

    store.rebuild_projections()
    assert _snapshot(store) == live
    assert store.list_versions("calc") + store.list_versions("parse") == live_versions
    assert store.last_position() == 8  # the log itself is untouched


def test_rebuild_restores_damaged_projections(store: BaseStore, event, enhancement, feedback) -> None:
    _busy_history(store, event, enhancement, feedback)
    live = _snapshot(store)
    with store.atomic():
        store._rows("DELETE FROM versions WHERE function_name = 'parse'")
        store._rows("UPDATE metrics SET feedback_count = 99")
        store._rows("DELETE FROM requests")
    assert _snapshot(store) != live
    store.rebuild_projections()
    assert _snapshot(store) == live


def test_rebuild_that_fails_changes_nothing(store: BaseStore, event, enhancement, feedback) -> None:
    _busy_history(store, event, enhancement, feedback)
    live = _snapshot(store)
    # A log the projector cannot replay (only reachable by tampering with the database).
    with store.atomic():
        store._rows("UPDATE events SET payload = '{}' WHERE position = 4")
    with pytest.raises(StoreError):
        store.rebuild_projections()
    assert _snapshot(store) == live


def test_data_survives_close_and_reopen(open_store, engine, event, enhancement, feedback) -> None:
    with open_store() as store:
        _busy_history(store, event, enhancement, feedback)
        live = _snapshot(store)
        versions = store.list_versions("calc")
        request = store.get_request("r2")
    with open_store() as store:
        assert _snapshot(store) == live
        assert store.list_versions("calc") == versions
        assert store.get_request("r2") == request
        assert store.current_version("calc") == "v2"
        assert store.last_position() == 8
        assert store.append_events([event(id="later")])[0].position == 9
        if engine == "sqlite":
            assert store.integrity_check() == "ok"


def test_a_qualified_identity_keeps_its_module_and_name_apart(store: BaseStore, enhancement) -> None:
    store.append_events([enhancement("mypkg.text.first", 1, module="mypkg.text"),
                         enhancement("other.first", 1, module="other"), enhancement("first", 1)])
    for identity, module in (("mypkg.text.first", "mypkg.text"), ("other.first", "other"), ("first", "")):
        v = store.get_version(identity, "v1")
        assert v.function_name == identity and v.current
        assert (v.spec.module, v.spec.function_name, v.spec.identity) == (module, "first", identity)
        assert store.next_version_number(identity) == 2
    rebuilt = _snapshot(store)
    store.rebuild_projections()
    assert _snapshot(store) == rebuilt
