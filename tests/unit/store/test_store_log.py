"""The event log: appends, duplicates, rollback, transactions, reads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from poet_grpc.core.models import AppendResult, EventFilter
from poet_grpc.store import BaseStore, StoreError

ALL = EventFilter()


def _ids(events) -> list[str]:
    return [e.id for e in events]


def test_empty_log(store: BaseStore) -> None:
    assert store.last_position() == 0
    assert store.read_events(0, ALL, 10) == ([], 0)
    assert store.get_event("nope") is None
    assert store.append_events([]) == []


def test_append_gives_consecutive_positions(store: BaseStore, event) -> None:
    first = store.append_events([event(id="a"), event(id="b")])
    second = store.append_events([event(id="c")])
    assert first == [AppendResult("a", 1, False), AppendResult("b", 2, False)]
    assert second == [AppendResult("c", 3, False)]
    assert store.last_position() == 3


def test_input_position_is_ignored(store: BaseStore, event) -> None:
    [result] = store.append_events([event(id="a", position=99)])
    assert result.position == 1
    assert store.get_event("a").position == 1


def test_event_round_trip(store: BaseStore, event) -> None:
    original = event(
        "external.alert", id="x", timestamp=1234.5, function_name="calc",
        correlation_id="corr", causation_id="cause",
        payload={"nested": {"a": [1, 2.5, None, "é"]}, "flag": True},
        metadata={"version": "1.0", "service": "poet"},
    )
    store.append_events([original])
    stored = store.get_event("x")
    assert stored == replace(original, position=1)


def test_duplicate_of_logged_event_is_not_appended(store: BaseStore, event) -> None:
    store.append_events([event(id="a"), event(id="b")])
    results = store.append_events([event(id="b", payload={"other": 1}), event(id="c")])
    assert results == [AppendResult("b", 2, True), AppendResult("c", 3, False)]
    assert store.last_position() == 3
    assert store.get_event("b").payload == {}  # the first one wins


def test_duplicate_within_one_batch(store: BaseStore, event) -> None:
    results = store.append_events([event(id="a"), event(id="b"), event(id="a")])
    assert results == [
        AppendResult("a", 1, False), AppendResult("b", 2, False), AppendResult("a", 1, True)
    ]
    assert store.last_position() == 2
    assert _ids(store.read_events(0, ALL, 10)[0]) == ["a", "b"]


def test_failing_projection_rolls_back_the_whole_batch(
    store: BaseStore, event, enhancement, feedback
) -> None:
    store.append_events([event(id="before")])
    batch = [
        event(id="plain"),
        enhancement("calc", 1),
        feedback("calc", "v9"),  # unknown version: the projector raises
    ]
    with pytest.raises(StoreError, match="unknown version"):
        store.append_events(batch)
    assert store.last_position() == 1
    assert store.get_event("plain") is None
    assert store.get_version("calc", "v1") is None
    assert store.current_version("calc") is None
    # No position consumed: the next append continues gap-free.
    [result] = store.append_events([event(id="after")])
    assert result.position == 2
    assert [e.position for e in store.read_events(0, ALL, 10)[0]] == [1, 2]


def test_unserializable_payload_is_refused(store: BaseStore, event) -> None:
    with pytest.raises(StoreError, match="JSON"):
        store.append_events([event(id="a"), event(id="b", payload={"x": object()})])
    assert store.last_position() == 0


def test_atomic_rolls_back_on_exception(store: BaseStore, event) -> None:
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.append_events([event(id="a")])
            assert store.last_position() == 1  # visible inside the transaction
            raise RuntimeError("boom")
    assert store.last_position() == 0
    assert store.append_events([event(id="b")])[0].position == 1


def test_append_joins_an_outer_transaction(store: BaseStore, event, open_store) -> None:
    other = open_store()
    with store.atomic():
        store.append_events([event(id="a")])
        store.append_events([event(id="b")])
        # Not committed yet: another connection does not see it.
        assert other.last_position() == 0
    assert other.last_position() == 2


def test_failed_nested_append_undoes_only_itself(store: BaseStore, event, feedback) -> None:
    with store.atomic():
        store.append_events([event(id="a")])
        with pytest.raises(StoreError):
            store.append_events([event(id="b"), feedback("ghost", "v1")])
        store.append_events([event(id="c")])
    assert _ids(store.read_events(0, ALL, 10)[0]) == ["a", "c"]
    assert store.get_event("c").position == 2


@pytest.fixture
def log(store: BaseStore, event) -> BaseStore:
    """Ten events: alternating functions, three types, two correlations, t = 100..109."""
    store.append_events([
        event(
            ("a.created", "b.updated", "c.deleted")[i % 3],
            id=f"e{i}",
            timestamp=100.0 + i,
            function_name="calc" if i % 2 == 0 else "parse",
            correlation_id="req-1" if i < 4 else "req-2",
        )
        for i in range(10)
    ])
    return store


def test_read_all_in_order(log: BaseStore) -> None:
    events, considered = log.read_events(0, ALL, 100)
    assert [e.position for e in events] == list(range(1, 11))
    assert considered == 10


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (EventFilter(function_name="calc"), ["e0", "e2", "e4", "e6", "e8"]),
        (EventFilter(event_type="b.updated"), ["e1", "e4", "e7"]),
        (EventFilter(correlation_id="req-1"), ["e0", "e1", "e2", "e3"]),
        (EventFilter(function_name="parse", event_type="a.created"), ["e3", "e9"]),
        (EventFilter(function_name="nobody"), []),
        # start_time inclusive, end_time exclusive
        (EventFilter(start_time=102.0, end_time=105.0), ["e2", "e3", "e4"]),
        (EventFilter(start_time=108.0), ["e8", "e9"]),
        (EventFilter(end_time=101.0), ["e0"]),
        (EventFilter(start_time=104.5, end_time=106.5), ["e5", "e6"]),
        (EventFilter(function_name="calc", start_time=103.0, end_time=107.0), ["e4", "e6"]),
    ],
)
def test_read_filters(log: BaseStore, flt: EventFilter, expected: list[str]) -> None:
    events, considered = log.read_events(0, flt, 100)
    assert _ids(events) == expected
    assert considered == 10  # fewer than limit: the whole log was considered


def test_paging_by_after_position(log: BaseStore) -> None:
    flt = EventFilter(function_name="calc")
    page1, cursor1 = log.read_events(0, flt, 2)
    page2, cursor2 = log.read_events(cursor1, flt, 2)
    page3, cursor3 = log.read_events(cursor2, flt, 2)
    assert (_ids(page1), cursor1) == (["e0", "e2"], 3)  # full page: last returned
    assert (_ids(page2), cursor2) == (["e4", "e6"], 7)
    assert (_ids(page3), cursor3) == (["e8"], 10)  # short page: end of log
    assert log.read_events(cursor3, flt, 2) == ([], 10)


def test_considered_advances_past_non_matching_events(log: BaseStore, event) -> None:
    flt = EventFilter(event_type="a.created")
    events, considered = log.read_events(9, flt, 5)  # e9 (position 10) matches
    assert _ids(events) == ["e9"] and considered == 10
    log.append_events([event("other", id="x1"), event("other", id="x2")])
    events, considered = log.read_events(considered, flt, 5)
    assert events == [] and considered == 12
    # Past the end (e.g. a stale client): the checkpoint never moves back.
    assert log.read_events(50, flt, 5) == ([], 50)


def test_limit_must_be_positive(log: BaseStore) -> None:
    with pytest.raises(ValueError):
        log.read_events(0, ALL, 0)


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ("function_name = 'x'", "events_by_function_name"),
        ("type = 'x'", "events_by_type"),
        ("correlation_id = 'x'", "events_by_correlation_id"),
    ],
)
def test_filtered_reads_use_an_index(log: BaseStore, where: str, index: str, engine: str) -> None:
    query = f"SELECT * FROM events WHERE position > 0 AND position <= 10 AND {where} ORDER BY position LIMIT 5"
    if engine == "sqlite":
        plan = log._rows(f"EXPLAIN QUERY PLAN {query}")
        detail = " ".join(row[-1] for row in plan)
        assert index in detail and "TEMP B-TREE" not in detail
    else:
        # A ten-row table is cheapest to scan: ask whether an index serves it in order.
        with log.atomic():
            log._rows("SET LOCAL enable_seqscan = off")
            detail = " ".join(row[0] for row in log._rows(f"EXPLAIN {query}"))
        assert index in detail and "Sort" not in detail


@pytest.mark.parametrize(("pattern", "expected"), [
    ("drift.*", ["drift.detected", "drift.resolved"]),
    ("drift*", ["drift.detected", "drift.resolved", "drift/odd", "drift-x", "drifts", "driftz"]),
    ("*", None),
])
def test_type_patterns_match_by_prefix_byte_by_byte(store: BaseStore, event, pattern: str, expected) -> None:
    types = ["drift-x", "drift.detected", "drift/odd", "drifts", "drift.resolved", "driftz", "drif", "Drift.x", "dr"]
    store.append_events([event(t) for t in types])
    events, _ = store.read_events(0, EventFilter(event_type=pattern), 100)
    assert [e.type for e in events] == (types if expected is None else [t for t in types if t in expected])
