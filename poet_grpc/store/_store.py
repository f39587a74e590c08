"""The log and its projections in the SQL both engines share: BaseStore.

Synchronous and not thread-safe by design: the server calls a store from one
dedicated thread. Callers append events; only the projector writes projection rows.
An engine (_sqlite.Store, _postgres.PostgresStore) supplies the connection, its
transactions and its schema; everything else is here, written once. The shared SQL
uses `?` and `:name` parameters; the PostgreSQL connection turns them into its own
(so it holds no `%`, and no `?` or `:name` inside a literal).
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..core.models import (
    AppendResult,
    EnhancementSpec,
    EventFilter,
    EventRecord,
    FunctionVersion,
    GeneratedCode,
    VersionMetrics,
    split_identity,
)
from . import _projector
from ._errors import StoreError

_REPLAY_CHUNK = 1000

_EVENT_COLUMNS = (
    "position, id, type, source, timestamp, function_name, "
    "correlation_id, causation_id, payload, metadata"
)
_EVENT_INSERT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}, appended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# What a protobuf Timestamp can carry (0001-01-01 to 9999-12-31), in seconds.
MIN_TIMESTAMP = -62135596800.0
MAX_TIMESTAMP = 253402300800.0
_VERSION_SELECT = """
    SELECT v.*, m.success_rate, m.avg_duration, m.error_rate, m.feedback_count,
           m.rating_count, m.rating_sum, m.execution_count, m.failure_count,
           m.timeout_count, m.transient_count, m.duration_sum_ms, f.current_version,
           ml.drift_detections, ml.false_positives, ml.confirmed_drifts, ml.missed_drifts
    FROM versions v
    LEFT JOIN metrics m ON m.function_name = v.function_name AND m.version = v.version
    LEFT JOIN functions f ON f.name = v.function_name
    LEFT JOIN (
        SELECT function_name, version,
               SUM(drift_detected) AS drift_detections,
               SUM(CASE WHEN verdict = 'false_positive' THEN 1 ELSE 0 END) AS false_positives,
               SUM(CASE WHEN verdict = 'confirmed' THEN 1 ELSE 0 END) AS confirmed_drifts,
               SUM(CASE WHEN verdict = 'missed' THEN 1 ELSE 0 END) AS missed_drifts
        FROM ml_executions GROUP BY function_name, version
    ) ml ON ml.function_name = v.function_name AND ml.version = v.version
"""


class Cursor(Protocol):
    rowcount: int
    description: Any

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Sql(Protocol):
    """One engine's connection as the shared code uses it."""

    errors: tuple[type[Exception], ...]
    """The driver's errors (reported as StoreError)."""

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...


@dataclass(frozen=True)
class StoredRequest:
    """An idempotency record: what an earlier request with this id produced."""

    request_id: str
    operation: str
    """The event type that recorded it."""
    fingerprint: str
    result: dict


class QuotaUsage(NamedTuple):
    """What one caller has stored (see Store.charge_quota)."""

    functions: int
    """Functions it created (stored the first version of)."""
    versions: int
    """Its versions of the function asked about."""
    bytes: int
    """Bytes of code (source and generated) of all its versions."""


def _store_call(method):
    """Run the method on a connection of the engine's (its session), and report
    driver failures as StoreError, the one error callers handle."""

    @functools.wraps(method)
    def wrapper(self: BaseStore, *args, **kwargs):
        try:
            with self._session():
                return method(self, *args, **kwargs)
        except self._driver_errors as exc:
            raise self._store_error(method.__name__, exc) from exc

    return wrapper


_NO_SESSION = nullcontext()


class BaseStore:
    """Appends events and reads the log and projections; an engine subclass owns the
    connection. Every public method is one engine call (`_store_call`)."""

    _driver_errors: tuple[type[Exception], ...] = ()
    group_limit = 512
    """Most writes run_group should be given at once."""
    _release_savepoints = True
    """Release a nested block's savepoint when it succeeds. Not needed for correctness
    (a later savepoint of the same name shadows it; the commit ends them all), only
    for the engine's bookkeeping: PostgreSQL keeps them, saving a round trip each."""
    _sql: Sql
    """The connection, as shared code uses it (valid inside a session)."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._depth = 0  # atomic() nesting; 0 = no transaction of ours
        self._appended: list[tuple[EventRecord, int]] | None = None  # (event, bytes), by run_group
        self._schema_version = 0
        self._page_token_key = b""
        self._last_appended: int | None = None
        """The log's last position as this transaction left it (None: read it), so
        appends after the first in a transaction need not ask."""

    # -- what an engine provides --------------------------------------------

    def _session(self) -> AbstractContextManager:
        """Hold a connection for the duration of one call (nested calls share it)."""
        return _NO_SESSION

    def _store_error(self, context: str, exc: Exception) -> StoreError:
        """The StoreError a driver error is reported as (StoreUnavailable when the
        database may serve the same call later)."""
        return StoreError(f"{context}: {exc}")

    def _begin(self) -> None:
        """Open the outermost write transaction, holding the database's write lock."""
        raise NotImplementedError

    def _commit(self) -> None:
        self._exec("COMMIT")

    def _rollback(self) -> None:
        raise NotImplementedError

    def _in_transaction(self) -> bool:
        """False once an error has ended the transaction (nothing of it can commit)."""
        raise NotImplementedError

    def _unsynced_commit(self) -> AbstractContextManager:
        """Commit the next transaction without waiting for it to reach the disk."""
        return _NO_SESSION

    def _announce(self, last_position: int) -> None:
        """This transaction appended events up to last_position: tell other processes
        once it commits (PostgreSQL: NOTIFY). One process (SQLite) has nobody to tell."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------

    def _signing_key(self, name: str) -> bytes:
        row = self._sql.execute("SELECT key FROM signing_keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self.atomic():
                # Another process may have made it meanwhile; its key wins.
                self._sql.execute("INSERT INTO signing_keys (name, key) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                  (name, secrets.token_hex(32)))
            row = self._sql.execute("SELECT key FROM signing_keys WHERE name = ?", (name,)).fetchone()
        return bytes.fromhex(row[0])

    @property
    def page_token_key(self) -> bytes:
        """The secret that signs this database's page tokens (kept in the database)."""
        return self._page_token_key

    def schema_version(self) -> int:
        return self._schema_version

    # -- transactions ------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[BaseStore]:
        """One write transaction. A nested block joins the outer transaction through a
        savepoint: its failure undoes only its own work, and nothing is committed before
        the outermost block ends."""
        if self._depth:
            savepoint = f"nested_{self._depth}"
            self._exec(f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._last_appended = None  # what it appended is undone
                if self._in_transaction():  # an error may have ended it already
                    self._exec(f"ROLLBACK TO {savepoint}")
                    self._exec(f"RELEASE {savepoint}")
                raise
            else:
                if self._release_savepoints:
                    self._exec(f"RELEASE {savepoint}")
            finally:
                self._depth -= 1
            return
        with self._session():
            self._last_appended = None
            self._begin()
            self._depth = 1
            try:
                yield self
                self._commit()
            except BaseException:
                if self._in_transaction():
                    self._rollback()
                raise
            finally:
                self._depth = 0
                self._last_appended = None

    def _exec(self, sql: str) -> None:
        try:
            self._sql.execute(sql)
        except self._driver_errors as exc:
            raise self._store_error(sql, exc) from exc

    # -- the log -----------------------------------------------------------

    @_store_call
    def append_events(self, events: Sequence[EventRecord]) -> list[AppendResult]:
        results: list[AppendResult] = []
        if not events:
            return results
        mark = len(self._appended) if self._appended is not None else 0
        try:
            return self._append_events(events, results)
        except BaseException:
            if self._appended is not None:
                del self._appended[mark:]  # rolled back with the batch
            raise

    def _append_events(self, events: Sequence[EventRecord], results: list[AppendResult]) -> list[AppendResult]:
        with self.atomic():
            # Max + 1 under the write lock (every write transaction holds it), once
            # per batch: gap-free, a rolled-back insert frees its positions, and
            # commit order is position order.
            sql = self._sql
            position = self._last_appended
            if position is None:
                position = sql.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
            known: dict[str, int] = {}  # id -> position, of the ids already logged
            for start in range(0, len(events), 500):
                ids = [event.id for event in events[start:start + 500]]
                known.update(sql.execute(
                    f"SELECT id, position FROM events WHERE id IN ({','.join('?' * len(ids))})", ids
                ).fetchall())
            rows: list[tuple] = []
            stored: list[tuple[EventRecord, int]] = []
            encode = _Encoder(self._clock())
            for event in events:
                existing = known.get(event.id)
                if existing is not None:
                    results.append(AppendResult(event.id, existing, duplicate=True))
                    continue
                position += 1
                row, record, size = encode.row(event, position)
                rows.append(row)
                stored.append((record, size))
                known[event.id] = position
                results.append(AppendResult(event.id, position, duplicate=False))
            # One statement for the batch: far less per-row overhead than an
            # execute per event.
            sql.executemany(_EVENT_INSERT, rows)
            # The projector never reads the events table, so projecting after the
            # inserts gives the same rows as projecting after each one.
            for record, _ in stored:
                if record.type in _projector.HANDLERS:
                    _projector.apply(sql, record)
            if self._appended is not None:
                self._appended.extend(stored)
            if stored:
                self._announce(position)
        # Outside the block above: had it failed, its rollback would have cleared this.
        self._last_appended = position
        return results

    def run_group(
        self, transactions: Sequence[Any]
    ) -> tuple[list[tuple[bool, Any]], list[tuple[EventRecord, int]]]:
        """Group commit: run each transaction (a callable taking the store) in one
        outer transaction, each inside its own savepoint, and commit once (one fsync
        for all of them).

        Returns ((ok, result-or-exception) per transaction, (event, stored bytes) of
        the events the committed ones appended, in position order). A transaction that raises undoes only
        its own work; if the commit itself fails, every transaction fails with it.
        """
        outcomes: list[tuple[bool, Any]] = []
        self._appended = appended = []
        if len(transactions) == 1:
            # Alone: the transaction itself, without a savepoint (round trips saved);
            # its failure undoes only its own work all the same.
            try:
                with self.atomic():
                    outcomes.append((True, transactions[0](self)))
            except Exception as exc:  # noqa: BLE001 - delivered to its caller
                return [(False, exc)], []
            finally:
                self._appended = None
            return outcomes, appended
        try:
            with self.atomic():
                for transaction in transactions:
                    mark = len(appended)
                    try:
                        with self.atomic():
                            outcomes.append((True, transaction(self)))
                    except Exception as exc:  # noqa: BLE001 - delivered to its caller
                        del appended[mark:]
                        outcomes.append((False, exc))
                        if not self._in_transaction():
                            # The error ended the whole transaction: nothing before it
                            # is committed either.
                            raise
        except Exception as exc:  # noqa: BLE001
            failure = exc if isinstance(exc, StoreError) else StoreError(f"group commit failed: {exc}")
            done = len(outcomes)
            outcomes = [
                (False, result if not ok and i == done - 1 else failure)
                for i, (ok, result) in enumerate(outcomes)
            ]
            outcomes += [(False, failure)] * (len(transactions) - done)
            return outcomes, []
        finally:
            self._appended = None
        return outcomes, appended

    @_store_call
    def read_events(
        self, after_position: int, flt: EventFilter, limit: int
    ) -> tuple[list[EventRecord], int]:
        """Matching events after `after_position`, and the highest position considered."""
        rows, considered = self._read_rows(after_position, flt, limit)
        return _events_from_rows(rows), considered

    @_store_call
    def read_log(self, after_position: int, limit: int) -> tuple[list[tuple[EventRecord, int]], int]:
        """The whole log after `after_position` (up to limit events) as (event, stored
        size in bytes), the sizes run_group reports, and the highest position considered."""
        rows, considered = self._read_rows(after_position, EventFilter(), limit)
        # The sizes from the stored text, as _Encoder.row counts them.
        sizes = [len(row[8]) + len(row[9]) + len(row[1]) + len(row[2]) for row in rows]
        return list(zip(_events_from_rows(rows), sizes)), considered

    def _read_rows(self, after_position: int, flt: EventFilter, limit: int) -> tuple[list, int]:
        """read_events' rows (not yet decoded) and the highest position considered."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        # Bound the read by the last position taken first: events appended meanwhile
        # are left for the next call, so "considered" never skips one. (Commits come
        # in position order, so everything up to it is already visible.)
        last = self.last_position()
        clauses = ["position > ?", "position <= ?"]
        params: list[Any] = [after_position, last]
        for column, value in (
            ("function_name", flt.function_name),
            ("correlation_id", flt.correlation_id),
        ):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if flt.event_type.endswith("*"):
            # A type pattern: "drift.*" is every type starting with "drift.", as a
            # range on the type index.
            prefix = flt.event_type[:-1]
            if prefix:
                clauses.append("type >= ? AND type < ?")
                params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        elif flt.event_type:
            clauses.append("type = ?")
            params.append(flt.event_type)
        if flt.start_time is not None:
            clauses.append("timestamp >= ?")
            params.append(float(flt.start_time))
        if flt.end_time is not None:
            clauses.append("timestamp < ?")
            params.append(float(flt.end_time))
        rows = self._sql.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
            "ORDER BY position LIMIT ?",
            (*params, limit),
        ).fetchall()
        considered = rows[-1][0] if len(rows) == limit else last
        # A caller resuming past the end (nothing to consider) keeps its position.
        return rows, max(considered, after_position)

    @_store_call
    def last_position(self) -> int:
        return self._sql.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]

    @_store_call
    def log_start(self) -> int:
        """The first position still in the log: 1 until retention trims the log."""
        return self._sql.execute("SELECT COALESCE(MIN(position), 1) FROM events").fetchone()[0]

    @_store_call
    def trim_log(self, older_than: float, limit: int = 1000) -> int:
        """Retention: delete up to `limit` events from the start of the log, in log
        order, while they were appended before `older_than` (by the store's clock,
        not the timestamp a client gave); stop at the first newer one, so the log
        stays a gap-free run of positions. The last event is always kept, so the
        next position (max + 1) never goes back. Returns how many were deleted."""
        with self.atomic():
            rows = self._sql.execute(
                "SELECT position, appended_at FROM events WHERE position < (SELECT MAX(position) FROM events) "
                "ORDER BY position LIMIT ?",
                (limit,),
            ).fetchall()
            cut = 0
            for position, appended_at in rows:
                if appended_at >= older_than:
                    break
                cut = position
            if not cut:
                return 0
            return self._sql.execute("DELETE FROM events WHERE position <= ?", (cut,)).rowcount

    @_store_call
    def get_event(self, event_id: str) -> EventRecord | None:
        row = self._sql.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return _event_from_row(row) if row else None

    # -- projections -------------------------------------------------------

    @_store_call
    def get_version(self, function_name: str, version: str) -> FunctionVersion | None:
        return self._one_version(
            "WHERE v.function_name = ? AND v.version = ?", (function_name, version)
        )

    @_store_call
    def current_version(self, function_name: str) -> str | None:
        row = self._sql.execute(
            "SELECT current_version FROM functions WHERE name = ?", (function_name,)
        ).fetchone()
        return row[0] if row else None

    @_store_call
    def list_versions(
        self, function_name: str, *, after_number: int = 0, limit: int = 50
    ) -> list[FunctionVersion]:
        return self._versions(
            "WHERE v.function_name = ? AND v.number > ? ORDER BY v.number LIMIT ?",
            (function_name, after_number, limit),
        )

    @_store_call
    def next_version_number(self, function_name: str) -> int:
        return self._sql.execute(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE function_name = ?",
            (function_name,),
        ).fetchone()[0]

    @_store_call
    def find_version_by_hash(self, function_name: str, content_hash: str) -> FunctionVersion | None:
        # The newest one if several versions share a hash.
        return self._one_version(
            "WHERE v.function_name = ? AND v.content_hash = ? ORDER BY v.number DESC LIMIT 1",
            (function_name, content_hash),
        )

    @_store_call
    def get_request(self, request_id: str) -> StoredRequest | None:
        row = self._sql.execute(
            "SELECT request_id, operation, fingerprint, result FROM requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if not row:
            return None
        return StoredRequest(row[0], row[1], row[2], json.loads(row[3]))

    @_store_call
    def rebuild_projections(self) -> None:
        """Clear the projections and replay the whole log, in one transaction."""
        with self.atomic():
            _projector.clear(self._sql)
            after = 0
            while True:
                rows = self._sql.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? "
                    "ORDER BY position LIMIT ?",
                    (after, _REPLAY_CHUNK),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    _projector.apply(self._sql, _event_from_row(row))
                after = rows[-1][0]

    def _versions(self, where: str, params: Sequence[Any]) -> list[FunctionVersion]:
        cursor = self._sql.execute(f"{_VERSION_SELECT} {where}", params)
        columns = [d[0] for d in cursor.description]
        return [_version_from_row(dict(zip(columns, row))) for row in cursor.fetchall()]

    def _one_version(self, where: str, params: Sequence[Any]) -> FunctionVersion | None:
        found = self._versions(where, params)
        return found[0] if found else None

    @_store_call
    def caused_by(self, event_id: str, event_type: str) -> EventRecord | None:
        """The first event of this type whose causation_id is event_id."""
        row = self._sql.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE causation_id = ? AND type = ? ORDER BY position LIMIT 1",
            (event_id, event_type),
        ).fetchone()
        return _event_from_row(row) if row else None

    @_store_call
    def execution_target(self, execution_id: str, correlation_id: str = "") -> tuple[str, str] | None:
        """(function, version) of an ml_monitoring execution, by id or by the
        correlation id of its alert."""
        row = self._sql.execute(
            "SELECT function_name, version FROM ml_executions WHERE execution_id = ? "
            "OR (? != '' AND correlation_id = ?) ORDER BY execution_id = ? DESC LIMIT 1",
            (execution_id, correlation_id, correlation_id, execution_id),
        ).fetchone()
        return (row[0], row[1]) if row else None

    @_store_call
    def drift_verdicts(self, function_name: str, version: str) -> list[tuple[float, str]]:
        """(drift_score, verdict) of each detection of the version that has a verdict."""
        return [
            (row[0], row[1])
            for row in self._sql.execute(
                "SELECT drift_score, verdict FROM ml_executions WHERE function_name = ? AND version = ? "
                "AND drift_detected = 1 AND verdict != ''",
                (function_name, version),
            ).fetchall()
        ]

    # -- consumers ---------------------------------------------------------

    @_store_call
    def consumer_position(self, name: str) -> int:
        """Where the named log consumer has got to (0 if it never ran)."""
        row = self._sql.execute("SELECT position FROM consumers WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    @_store_call
    def set_consumer_position(self, name: str, position: int) -> None:
        """Record the consumer's progress (joins an outer atomic(), so progress and
        the events it derived commit together).

        On its own (outside a transaction) it commits without waiting for the disk
        (SQLite: synchronous=NORMAL for that commit; PostgreSQL: synchronous_commit
        off): it survives a crash of the process, and the next durable commit makes
        it durable; only a power loss (or a crash of the database server) before then can take the
        consumer back to its previous position, and consumers replay idempotently.
        Consumers save often, and an fsync each would stall the log's writer."""
        with self._unsynced_commit():
            with self.atomic():
                self._sql.execute(
                    "INSERT INTO consumers (name, position) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    (name, position),
                )

    # -- feedback reviews (the learning loop) ------------------------------

    @_store_call
    def feedback_reviewed(self, feedback_id: str) -> bool:
        """True once the learning loop reviewed this feedback without making a version."""
        row = self._sql.execute("SELECT 1 FROM feedback_reviews WHERE feedback_id = ?", (feedback_id,)).fetchone()
        return row is not None

    @_store_call
    def record_feedback_review(self, feedback_id: str, reviewed_at: float) -> None:
        with self.atomic():
            self._sql.execute(
                "INSERT INTO feedback_reviews (feedback_id, reviewed_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (feedback_id, reviewed_at),
            )

    # -- quotas ------------------------------------------------------------

    @_store_call
    def quota_usage(self, principal: str, function_name: str) -> QuotaUsage:
        """What principal has stored: functions it created, its versions of function_name, bytes of code."""
        functions, size = self._sql.execute(
            "SELECT functions, bytes FROM principal_usage WHERE principal = ?", (principal,)
        ).fetchone() or (0, 0)
        versions = self._sql.execute(
            "SELECT versions FROM function_usage WHERE principal = ? AND function_name = ?", (principal, function_name)
        ).fetchone()
        return QuotaUsage(functions, versions[0] if versions else 0, size)

    @_store_call
    def charge_quota(self, principal: str, function_name: str, *, created_function: bool, size: int) -> None:
        """Count one more version of function_name (size bytes of code) against principal;
        joins the transaction that stores the version, so both commit or neither."""
        with self.atomic():
            self._sql.execute(
                "INSERT INTO principal_usage (principal, functions, bytes) VALUES (?, ?, ?) "
                "ON CONFLICT (principal) DO UPDATE SET functions = principal_usage.functions + excluded.functions, "
                "bytes = principal_usage.bytes + excluded.bytes",
                (principal, int(created_function), size),
            )
            self._sql.execute(
                "INSERT INTO function_usage (principal, function_name, versions, bytes) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (principal, function_name) DO UPDATE SET versions = function_usage.versions + 1, "
                "bytes = function_usage.bytes + excluded.bytes",
                (principal, function_name, size),
            )

    # -- dead letters (integrations) ---------------------------------------

    @_store_call
    def add_dead_letter(self, sink: str, event: EventRecord, *, attempts: int, error: str,
                        first_failure_at: float, last_failure_at: float) -> int:
        """Record an event a sink gave up on; its id."""
        with self.atomic():
            return self._sql.execute(
                "INSERT INTO dead_letters (sink, event_id, event_position, event_type, function_name, attempts, "
                "last_error, first_failure_at, last_failure_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending') "
                "RETURNING id",
                (sink, event.id, event.position, event.type, event.function_name, attempts, error,
                 first_failure_at, last_failure_at),
            ).fetchone()[0]

    @_store_call
    def list_dead_letters(self, sink: str, after_id: int, limit: int, *, ids: Sequence[int] = (),
                          pending_only: bool = False) -> list[dict[str, Any]]:
        """Dead letters by id (oldest first), of one sink or ("") all."""
        clauses, params = ["id > ?"], [after_id]
        if sink:
            clauses.append("sink = ?")
            params.append(sink)
        if ids:
            clauses.append(f"id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        if pending_only:
            clauses.append("status = 'pending'")
        order = "event_position, id" if pending_only else "id"
        cursor = self._sql.execute(
            f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT ?", [*params, limit]
        )
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    @_store_call
    def update_dead_letter(self, dead_letter_id: int, *, status: str, attempts: int, error: str,
                           failed_at: float | None) -> None:
        with self.atomic():
            self._sql.execute(
                "UPDATE dead_letters SET status = ?, attempts = ?, last_error = ?, "
                "last_failure_at = COALESCE(?, last_failure_at) WHERE id = ?",
                (status, attempts, error, failed_at, dead_letter_id),
            )

    # -- for tests and maintenance -------------------------------------------

    @_store_call
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of a statement in the shared SQL (tests look at tables with it)."""
        cursor = self._sql.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


def _events_from_rows(rows: Sequence[Sequence[Any]]) -> list[EventRecord]:
    """_event_from_row of each; events of one batch share their metadata text, which
    is decoded once (each event still gets its own dict)."""
    events = []
    text, decoded = None, {}
    for row in rows:
        if row[9] != text:
            text, decoded = row[9], json.loads(row[9])
        events.append(_event_from_row(row, dict(decoded)))
    return events


def _event_from_row(row: Sequence[Any], decoded_metadata: dict[str, Any] | None = None) -> EventRecord:
    (position, id_, type_, source, timestamp, function_name,
     correlation_id, causation_id, payload, metadata) = row
    return EventRecord(
        id=id_,
        type=type_,
        source=source,
        timestamp=timestamp,
        payload=json.loads(payload),
        correlation_id=correlation_id,
        causation_id=causation_id,
        metadata=json.loads(metadata) if decoded_metadata is None else decoded_metadata,
        function_name=function_name,
        position=position,
    )


def _metrics_from_row(r: dict[str, Any]) -> VersionMetrics:
    """Measured rates when executions were reported, else the latest reported ones."""
    rating_count = r["rating_count"] or 0
    executions = r["execution_count"] or 0
    failures = r["failure_count"] or 0
    if executions:
        rates = {
            "success_rate": (executions - failures) / executions,
            "error_rate": failures / executions,
            "avg_duration": (r["duration_sum_ms"] or 0.0) / executions,
        }
    else:
        rates = {key: r[key] or 0.0 for key in ("success_rate", "error_rate", "avg_duration")}
    return VersionMetrics(
        **rates,
        feedback_count=r["feedback_count"] or 0,
        avg_rating=(r["rating_sum"] / rating_count) if rating_count else 0.0,
        rating_count=rating_count,
        execution_count=executions,
        failure_count=failures,
        timeout_count=r["timeout_count"] or 0,
        transient_count=r["transient_count"] or 0,
        drift_detections=r["drift_detections"] or 0,
        false_positives=r["false_positives"] or 0,
        confirmed_drifts=r["confirmed_drifts"] or 0,
        missed_drifts=r["missed_drifts"] or 0,
    )


def _version_from_row(r: dict[str, Any]) -> FunctionVersion:
    # The row is keyed by the function's identity ("mypkg.text.first" or "first"):
    # the spec gets its module and name back, so a regeneration sees the same module.
    module, name = split_identity(r["function_name"])
    return FunctionVersion(
        function_name=r["function_name"],
        version=r["version"],
        number=r["number"],
        created_at=r["created_at"],
        status=r["status"],
        spec=EnhancementSpec(
            function_name=name,
            module=module,
            original_code=r["original_code"],
            domain=r["domain"],
            optimize_for=r["optimize_for"],
            context=json.loads(r["context"]),
            dana_source=r["dana_source"],
            config=json.loads(r["config"]),
        ),
        code=GeneratedCode(
            python=r["python_code"],
            dana=r["dana_code"],
            optimizations=tuple(json.loads(r["optimizations"])),
            safety_level=r["safety_level"],
            generator=r["generator"],
            params=json.loads(r["params"]),
        ),
        content_hash=r["content_hash"],
        parent_version=r["parent_version"],
        metrics=_metrics_from_row(r),
        current=r["current_version"] == r["version"],
        update_reason=r.get("update_reason") or "",
    )


class _Encoder:
    """Turns events into rows of the events table, and into the records the projector
    and live subscribers see: what was stored (JSON round-trip included), exactly as a
    replay will read it."""

    def __init__(self, appended_at: float) -> None:
        self._appended_at = appended_at
        # The events of a batch usually share their metadata: encode it once.
        self._metadata: dict[str, Any] | None = None
        self._metadata_json = ""
        self._metadata_stored: dict[str, Any] = {}

    def row(self, event: EventRecord, position: int) -> tuple[tuple, EventRecord, int]:
        """(row, stored record, stored size in bytes) of event at position."""
        try:
            payload = json.dumps(event.payload)
            if event.metadata != self._metadata:
                self._metadata, self._metadata_json = event.metadata, json.dumps(event.metadata)
                self._metadata_stored = json.loads(self._metadata_json)
            metadata = self._metadata_json
        except (TypeError, ValueError) as exc:
            raise StoreError(f"event {event.id!r} is not JSON-serializable: {exc}") from exc
        timestamp = float(event.timestamp)
        # Every reader turns it into a protobuf Timestamp: one it cannot carry
        # would break every read of the log that covers it (False for NaN too).
        if not MIN_TIMESTAMP <= timestamp <= MAX_TIMESTAMP:
            raise StoreError(f"event {event.id!r}: timestamp {timestamp!r} is outside years 1 to 9999")
        row = (position, event.id, event.type, event.source, timestamp,
               event.function_name, event.correlation_id, event.causation_id, payload, metadata, self._appended_at)
        record = EventRecord(
            id=event.id, type=event.type, source=event.source, timestamp=timestamp,
            payload=json.loads(payload), correlation_id=event.correlation_id,
            causation_id=event.causation_id, metadata=dict(self._metadata_stored),
            function_name=event.function_name, position=position,
        )
        return row, record, len(payload) + len(metadata) + len(event.id) + len(event.type)
