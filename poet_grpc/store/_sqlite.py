"""The SQLite engine (the embedded default): Store, the log and its projections in one file."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from . import _migrations
from ._errors import StoreError
from ._store import BaseStore

SYNCHRONOUS_MODES = ("FULL", "NORMAL")


class _SqliteSql:
    """The connection as the shared code uses it: sqlite3 takes `?` and `:name` as they are."""

    errors = (sqlite3.Error,)

    def __init__(self, conn: sqlite3.Connection):
        self.execute = conn.execute
        self.executemany = conn.executemany


class Store(BaseStore):
    """Owns the SQLite connection; appends events and reads the log and projections."""

    _driver_errors = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "FULL",
                 clock: Callable[[], float] = time.time):
        """clock gives the append time of events (retention goes by it)."""
        super().__init__(clock)
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self._path = Path(path)
        try:
            # isolation_level=None: the driver opens no implicit transactions,
            # atomic() issues BEGIN/COMMIT. check_same_thread=False: the thread that
            # opens the store need not be the one that uses it.
            conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self._path}: {exc}") from exc
        self._db = Database(conn, execute_plugins=False)
        self._sql = _SqliteSql(conn)
        try:
            # Wait for another process's write lock rather than failing at once.
            conn.execute("PRAGMA busy_timeout = 5000")
            # Journal mode can only change outside a transaction.
            self._db.enable_wal()
            if self._db.journal_mode != "wal":
                raise StoreError(f"cannot enable WAL on {self._path}")
            # Per connection, so set on every open.
            conn.execute(f"PRAGMA synchronous = {mode}")
            # The log's id index takes random inserts: each touches its own page.
            # A 64 MiB page cache keeps that index in memory, and checkpointing
            # every ~40 MB of WAL (not SQLite's default 4 MB) lets a page written
            # by many commits reach the database file once; the WAL file is
            # truncated back after each checkpoint.
            conn.execute("PRAGMA cache_size = -65536")
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            # Each write of a group runs in a savepoint, whose undo journal would
            # otherwise spill to a temporary file past 64 KiB: keep it in memory.
            conn.execute("PRAGMA temp_store = MEMORY")
            self._synchronous = mode
            self._schema_version = _migrations.migrate(self._db, self.atomic)
            self._page_token_key = self._signing_key("page_token")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open {self._path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        try:
            # SQLite's advice for long-lived connections: refresh planner statistics
            # (e.g. timestamp vs position ranges) when closing.
            self._db.conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass  # already closed, or busy: the statistics can wait
        self._db.close()  # closing twice is harmless

    # -- transactions ------------------------------------------------------

    def _begin(self) -> None:
        # IMMEDIATE takes the write lock now, so the transaction cannot fail
        # half-way with SQLITE_BUSY when it first writes.
        self._exec("BEGIN IMMEDIATE")

    def _rollback(self) -> None:
        self._db.conn.execute("ROLLBACK")

    def _in_transaction(self) -> bool:
        return self._db.conn.in_transaction

    @contextmanager
    def _unsynced_commit(self) -> Iterator[None]:
        relaxed = self._depth == 0 and self._synchronous == "FULL"
        if relaxed:
            self._db.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            if relaxed:
                self._db.conn.execute("PRAGMA synchronous = FULL")

    # -- maintenance -------------------------------------------------------

    def integrity_check(self) -> str:
        try:
            rows = self._db.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"integrity_check: {exc}") from exc
        return "\n".join(row[0] for row in rows)
