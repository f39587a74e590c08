"""Opening SQLite files: fresh schema, reopening, upgrades, pragmas (PostgreSQL's:
test_store_postgres.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from poet_grpc.store import Store, StoreError
from poet_grpc.store import _migrations

LATEST = _migrations.MIGRATIONS[-1][0]


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    """SQLite only, in this module."""
    with Store(db_path) as s:
        yield s


@contextmanager
def _raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection, to look at the file without the Store."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def test_fresh_file_gets_every_migration(store: Store, db_path: Path) -> None:
    assert store.schema_version() == LATEST
    with _raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert recorded == list(range(1, LATEST + 1))
    assert {"events", "functions", "versions", "metrics", "requests"} <= tables


def test_wal_mode_and_synchronous(db_path: Path) -> None:
    with Store(db_path) as store:
        assert store._db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with Store(db_path, synchronous="normal") as store:
        assert store._db.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # WAL is persistent: a plain connection sees it too.
    with _raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rejects_unknown_synchronous_mode(db_path: Path) -> None:
    with pytest.raises(ValueError):
        Store(db_path, synchronous="OFF")


def test_reopen_keeps_data_and_schema_version(db_path: Path, event) -> None:
    with Store(db_path) as store:
        store.append_events([event(id="a"), event(id="b")])
        version = store.schema_version()
    with Store(db_path) as store:
        assert store.schema_version() == version == LATEST
        assert store.last_position() == 2
        assert store.get_event("b").position == 2
    with _raw(db_path) as conn:
        # Not applied a second time.
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == LATEST


def test_opening_an_old_file_upgrades_it(db_path: Path, event, monkeypatch) -> None:
    with Store(db_path) as store:
        store.append_events([event(id="kept")])

    def add_notes(db) -> None:
        db.table("notes").create({"id": int, "text": str}, pk="id")

    monkeypatch.setattr(
        _migrations, "MIGRATIONS", [*_migrations.MIGRATIONS, (LATEST + 1, "notes", add_notes)]
    )
    with Store(db_path) as store:
        assert store.schema_version() == LATEST + 1
        assert store.get_event("kept") is not None
        assert store._db.table("notes").exists()
    # Idempotent: reopening applies nothing more.
    with Store(db_path) as store:
        assert store.schema_version() == LATEST + 1
    with _raw(db_path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert names[-1] == "notes" and len(names) == LATEST + 1


def test_failed_migration_leaves_previous_version(db_path: Path, monkeypatch) -> None:
    Store(db_path).close()

    def broken(db) -> None:
        db.table("half_done").create({"id": int}, pk="id")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(
        _migrations, "MIGRATIONS", [*_migrations.MIGRATIONS, (LATEST + 1, "broken", broken)]
    )
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(db_path)
    with _raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'"
        ).fetchone()[0] == 0
    monkeypatch.undo()
    with Store(db_path) as store:
        assert store.schema_version() == LATEST


def test_file_newer_than_code_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    with _raw(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST + 5}")
    with pytest.raises(StoreError, match="newer"):
        Store(db_path)


def test_integrity_check(store: Store, enhancement, feedback) -> None:
    store.append_events([enhancement(), feedback(rating=4)])
    assert store.integrity_check() == "ok"


def test_path_and_double_close(db_path: Path) -> None:
    store = Store(str(db_path))
    assert store.path == db_path
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.last_position()
