"""The store against what a client may claim: retention by append time (not by the
event's timestamp), timestamps no reader could carry, and the page-token key."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from poet_grpc.store import BaseStore, Store, StoreError
from poet_grpc.store import _migrations

YEAR_9999 = 253402300799.0
DAY = 86400.0


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_far_future_timestamp_does_not_stop_retention(open_store, event) -> None:
    clock = Clock(1000.0)
    with open_store(clock=clock) as store:
        store.append_events([event(id="future", timestamp=YEAR_9999)])
        clock.now += 1
        store.append_events([event(id=f"old-{n}", timestamp=0.0) for n in range(3)])
        clock.now += 40 * DAY
        store.append_events([event(id="recent", timestamp=0.0)])
        # Everything appended more than a day before the clock's now goes, claims aside.
        assert store.trim_log(clock.now - DAY) == 4
        assert store.log_start() == 5
        assert store.get_event("future") is None and store.get_event("recent") is not None


def test_a_backdated_timestamp_does_not_expire_early(open_store, event) -> None:
    clock = Clock(50 * DAY)
    with open_store(clock=clock) as store:
        store.append_events([event(id="backdated", timestamp=1.0), event(id="last", timestamp=1.0)])
        assert store.trim_log(clock.now - 30 * DAY) == 0
        # Still in the log, so its id is still a duplicate (the dedup window).
        [result] = store.append_events([event(id="backdated")])
        assert result.duplicate


def test_trimming_stops_at_the_first_event_appended_later(open_store, event) -> None:
    clock = Clock(1000.0)
    with open_store(clock=clock) as store:
        store.append_events([event(id="a"), event(id="b")])
        clock.now = 5000.0
        store.append_events([event(id="c"), event(id="d")])
        assert store.trim_log(2000.0) == 2
        assert store.trim_log(2000.0) == 0
        assert store.log_start() == 3


@pytest.mark.parametrize("timestamp", [YEAR_9999 + 2, -62135596801.0, math.inf, -math.inf, math.nan, 1e300])
def test_timestamps_no_reader_could_carry_are_refused(store: BaseStore, event, timestamp: float) -> None:
    store.append_events([event(id="seed")])
    with pytest.raises(StoreError, match="outside years 1 to 9999"):
        store.append_events([event(id="fine"), event(id="bad", timestamp=timestamp)])
    assert store.last_position() == 1 and store.get_event("fine") is None


def test_the_ends_of_the_range_are_stored(store: BaseStore, event) -> None:
    store.append_events([event(timestamp=YEAR_9999 + 0.999999999), event(timestamp=-62135596800.0)])
    assert store.last_position() == 2


def _version_3_file(path: Path) -> None:
    """A file as the code before append times left it, with a few events."""
    db = Database(sqlite3.connect(str(path), isolation_level=None))
    try:
        for number, _, migration in _migrations.MIGRATIONS[:3]:
            migration(db)
            db.execute(f"PRAGMA user_version = {number}")
        db.table("schema_migrations").create({"version": int, "name": str, "applied_at": float}, pk="version")
        for number, name, _ in _migrations.MIGRATIONS[:3]:
            db.table("schema_migrations").insert({"version": number, "name": name, "applied_at": 0.0})
        for position, timestamp in ((1, 1000.0), (2, YEAR_9999), (3, 2000.0)):
            db.table("events").insert({"position": position, "id": f"e{position}", "type": "a.b", "source": "t",
                                       "timestamp": timestamp})
    finally:
        db.close()


def test_upgrade_backfills_append_times_from_timestamps_capped_at_now(db_path: Path) -> None:
    _version_3_file(db_path)
    with Store(db_path) as store:
        assert store.schema_version() >= 4
        times = dict(store._db.execute("SELECT id, appended_at FROM events").fetchall())
        assert times["e1"] == 1000.0 and times["e3"] == 2000.0
        assert times["e2"] < YEAR_9999  # a claimed future is capped at the upgrade's time
        assert store.trim_log(times["e2"] + 1) == 2  # the last event is always kept


def test_page_token_key_is_the_databases_and_survives_reopening(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        key = store.page_token_key
    assert len(key) == 32
    with Store(tmp_path / "a.db") as store:
        assert store.page_token_key == key
    with Store(tmp_path / "b.db") as other:
        assert other.page_token_key != key
