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
from psycopg_pool import ConnectionPool, PoolTimeout

from . import _migrations_postgres
from ._errors import StoreError, StoreUnavailable
from ._store import BaseStore

WRITE_LOCK = 7_504_175_001
"""Key of the advisory lock every write transaction holds (advisory locks are per database)."""
LOG_CHANNEL = "poet_log"
"""The NOTIFY channel of appends: the payload is the last position a commit appended."""
MIN_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 5.0
# Errors after which the same call may well succeed: a lock not granted in time, a
# statement cancelled by a timeout, the server shutting down, a serialization failure.
_RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled, psycopg.errors.AdminShutdown,
              psycopg.errors.CannotConnectNow, psycopg.errors.SerializationFailure,
              psycopg.errors.DeadlockDetected, psycopg.OperationalError)


def connection_options(connect_timeout: float, application_name: str) -> dict[str, Any]:
    """libpq parameters of every connection: bounded waits, so that a database that
    vanishes (a dead host, a cut network) fails calls instead of hanging them, and a
    session that the service abandons does not keep locks for long."""
    return {
        "connect_timeout": max(1, int(connect_timeout)),
        "application_name": application_name,
        # The client notices a silent peer after about 5 + 2*3 s, and an unacknowledged
        # send after 10 s (Linux); the server drops a dead client's session as soon.
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
        "options": ("-c lock_timeout=10s -c idle_in_transaction_session_timeout=60s "
                    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"),
    }

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    """The shared SQL's `?` and `:name` parameters as psycopg's `%s` and `%(name)s`."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


class _PostgresSql:
    """One connection as the shared code uses it.

    A SAVEPOINT is not sent on its own: it waits for the next statement and goes with
    it in one round trip (psycopg's pipeline mode), in the same order. A group commit
    opens one or two per write, so this halves a write's round trips; an error of the
    savepoint itself (a transaction already failed) is then raised by that statement."""

    errors = (psycopg.Error,)

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self._savepoints: list[str] = []

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor | None:
        if not params and sql.startswith("SAVEPOINT "):
            self._savepoints.append(sql)
            return None
        if self._savepoints:
            with self.conn.pipeline():
                self._send_savepoints()
                cursor = self._execute(sql, params)
            return cursor
        return self._execute(sql, params)

    def _execute(self, sql: str, params) -> psycopg.Cursor:
        if not params:
            return self.conn.execute(sql)
        return self.conn.execute(_pyformat(sql), params)

    def _send_savepoints(self) -> None:
        savepoints, self._savepoints = self._savepoints, []
        for savepoint in savepoints:
            self.conn.execute(savepoint)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor:
        cursor = self.conn.cursor()
        with self.conn.pipeline():  # what executemany does anyway; the savepoints join it
            self._send_savepoints()
            cursor.executemany(_pyformat(sql), rows)
        return cursor

    def forget_savepoints(self) -> None:
        """The transaction ended (rolled back): savepoints not yet sent are void."""
        self._savepoints = []


class PostgresStore(BaseStore):
    """The log and its projections in a PostgreSQL database, through a small pool:
    each call takes a connection for its duration (a transaction keeps one to its end).

    A lost database is reported, never waited out: a call that finds the connection
    broken (or cannot get one within connect_timeout) raises StoreUnavailable, and the
    calls after it fail at once until a backoff (doubling up to MAX_BACKOFF_SECONDS)
    has passed; then one call tries again while the pool reconnects in the background.
    TCP keepalives and a user timeout bound how long a vanished server can hold a call."""

    _driver_errors = (psycopg.Error,)
    _release_savepoints = False  # a round trip each; the commit ends them all
    # Each write of a group runs in a savepoint or two, each a subtransaction once it
    # writes. Past 64 in one transaction PostgreSQL's per-backend cache of them
    # overflows, and every other session's snapshot then has to look them up (slower
    # reads for all replicas while the group is open): keep groups under that.
    group_limit = 30

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, connect_timeout: float = 5.0,
                 application_name: str = "poet"):
        """url: postgresql://user:password@host:port/database (libpq's forms)."""
        super().__init__(clock)
        self._sql: _PostgresSql | None = None
        self._announced = 0  # last position this transaction appended (0: none)
        self._backoff = 0.0
        self._down_until = 0.0
        self._connect_timeout = connect_timeout
        options = connection_options(connect_timeout, application_name)
        try:
            # Connect once first: a wrong URL or a server that is down is reported at
            # once, with the driver's reason (the pool would only time out).
            psycopg.connect(url, **options).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        # One thread uses the store, so one connection; the pool replaces it when it breaks.
        self._pool = ConnectionPool(url, min_size=1, max_size=1, timeout=connect_timeout, open=False,
                                    kwargs={"autocommit": True, **options}, name="poet-store",
                                    # Give up a reconnection early: the next call starts a new one,
                                    # with a short first delay (the pool's own delays keep doubling).
                                    reconnect_timeout=10.0)
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
        wait = self._down_until - time.monotonic()
        if wait > 0:
            raise StoreUnavailable(f"the database is unreachable; trying again in {wait:.1f} s", retry_after=wait)
        # Recovering: a short wait, so a probe does not hold the calls queued behind it.
        timeout = min(1.0, self._connect_timeout) if self._backoff else self._connect_timeout
        try:
            with self._pool.connection(timeout=timeout) as conn:
                self._sql = _PostgresSql(conn)
                try:
                    yield
                finally:
                    self._sql = None
        except PoolTimeout as exc:
            self._went_down()
            raise StoreUnavailable(f"no connection to the database: {exc}", retry_after=self._backoff) from exc
        else:
            self._backoff = 0.0

    def _went_down(self) -> None:
        self._backoff = min(MAX_BACKOFF_SECONDS, max(MIN_BACKOFF_SECONDS, self._backoff * 2))
        self._down_until = time.monotonic() + self._backoff

    def _store_error(self, context: str, exc: Exception) -> StoreError:
        if self._sql is not None and self._sql.conn.broken:
            self._went_down()  # the pool replaces the connection; give it the backoff
            return StoreUnavailable(f"{context}: lost the connection to the database: {exc}",
                                    retry_after=self._backoff)
        if isinstance(exc, _RETRYABLE):
            return StoreUnavailable(f"{context}: {exc}", retry_after=1.0)
        return super()._store_error(context, exc)

    # -- transactions ------------------------------------------------------

    def _begin(self) -> None:
        # The write lock, held to commit: commit order is position order (see above).
        # One round trip for both (no parameters: psycopg sends them as one simple query).
        self._exec(f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK})")

    def _commit(self) -> None:
        # PostgreSQL answers COMMIT of a failed transaction with a silent ROLLBACK.
        if self._sql.conn.info.transaction_status == TransactionStatus.INERROR:
            raise StoreError("the transaction failed earlier: nothing of it is committed")
        if self._announced:
            # Delivered to every listener when (and only if) the transaction commits,
            # in commit order (see log_wakeups); sent with the COMMIT, one round trip.
            announced, self._announced = int(self._announced), 0
            self._exec(f"SELECT pg_notify('{LOG_CHANNEL}', '{announced}'); COMMIT")
            return
        self._exec("COMMIT")

    def _rollback(self) -> None:
        self._announced = 0
        self._sql.forget_savepoints()
        self._sql.conn.execute("ROLLBACK")

    def _announce(self, last_position: int) -> None:
        self._announced = max(self._announced, last_position)

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
