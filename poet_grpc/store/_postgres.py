"""The PostgreSQL engine: PostgresStore, the log and its projections in a database
that several replicas can share (POET_DB=postgresql://...).

The gap-free global order. A position assigned at insert becomes visible at commit:
with concurrent writers a reader could see position N+1 committed while N is not
yet, pass it, and never see N (the known hole of PostgreSQL event stores). Here
every write transaction first takes one transaction-scoped advisory lock
(pg_advisory_xact_lock, released at commit or rollback), the same one writer at a
time that SQLite's BEGIN IMMEDIATE gives, and positions are max + 1 read under it.
So appends commit one after another in position order: once a reader sees position
N, every position below N is committed, or belonged to a rolled-back append and is
free for the next one; no event ever appears below a position a reader has passed.
The price is one writer at a time across replicas; group commit puts many writes in
each transaction. READ COMMITTED is asked for explicitly: each statement's snapshot
is taken after the lock, so max + 1 sees the previous holder's commit (under
REPEATABLE READ the snapshot would be older than the lock).

The dialect layer is small: `?`/`:name` parameters become psycopg's `%s`/`%(name)s`,
transactions take the lock, and the schema has its own DDL (_migrations_postgres).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from . import _migrations_postgres
from ._errors import StoreError
from ._store import BaseStore

WRITE_LOCK = 7_504_175_001
"""Key of the advisory lock every write transaction holds (advisory locks are per database)."""

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    """The shared SQL's `?` and `:name` parameters as psycopg's `%s` and `%(name)s`."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


class _PostgresSql:
    """One connection as the shared code uses it."""

    errors = (psycopg.Error,)

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor:
        if not params:
            return self.conn.execute(sql)
        return self.conn.execute(_pyformat(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor:
        cursor = self.conn.cursor()
        cursor.executemany(_pyformat(sql), rows)
        return cursor


class PostgresStore(BaseStore):
    """The log and its projections in a PostgreSQL database, through a small pool:
    each call takes a connection for its duration (a transaction keeps one to its end)."""

    _driver_errors = (psycopg.Error,)

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, connect_timeout: float = 10.0):
        """url: postgresql://user:password@host:port/database (libpq's forms)."""
        super().__init__(clock)
        self._sql: _PostgresSql | None = None
        try:
            # Connect once first: a wrong URL or a server that is down is reported at
            # once, with the driver's reason (the pool would only time out).
            psycopg.connect(url, connect_timeout=int(connect_timeout)).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        # One thread uses the store, so one connection; the pool replaces it when it breaks.
        self._pool = ConnectionPool(url, min_size=1, max_size=1, timeout=connect_timeout, open=False,
                                    kwargs={"autocommit": True, "application_name": "poet"}, name="poet-store")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            with self._session():
                self._schema_version = _migrations_postgres.migrate(self._sql.execute, self.atomic)
                self._page_token_key = self._signing_key("page_token")
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()  # closing twice is harmless

    @contextmanager
    def _session(self) -> Iterator[None]:
        if self._sql is not None:
            yield  # a call inside a call (or a transaction): the same connection
            return
        with self._pool.connection() as conn:
            self._sql = _PostgresSql(conn)
            try:
                yield
            finally:
                self._sql = None

    # -- transactions ------------------------------------------------------

    def _begin(self) -> None:
        self._exec("BEGIN ISOLATION LEVEL READ COMMITTED")
        # The write lock, held to commit: commit order is position order (see above).
        self._exec(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")

    def _commit(self) -> None:
        # PostgreSQL answers COMMIT of a failed transaction with a silent ROLLBACK.
        if self._sql.conn.info.transaction_status == TransactionStatus.INERROR:
            raise StoreError("the transaction failed earlier: nothing of it is committed")
        self._exec("COMMIT")

    def _rollback(self) -> None:
        self._sql.conn.execute("ROLLBACK")

    def _in_transaction(self) -> bool:
        # A failed statement leaves the transaction open (INERROR) until a rollback
        # to a savepoint or of the whole; a broken connection has none (UNKNOWN).
        return self._sql.conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @contextmanager
    def _unsynced_commit(self) -> Iterator[None]:
        relaxed = self._depth == 0
        if relaxed:
            self._exec("SET synchronous_commit = off")
        try:
            yield
        finally:
            if relaxed:
                self._exec("RESET synchronous_commit")
