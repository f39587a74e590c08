"""The Store: the event log and its projections on one SQLite file.

Synchronous and not thread-safe by design: the server calls it from one dedicated
thread. Callers append events; only the projector writes projection rows.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sqlite_utils import Database

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
from . import _migrations, _projector
from ._errors import StoreError

SYNCHRONOUS_MODES = ("FULL", "NORMAL")
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
               SUM(verdict = 'false_positive') AS false_positives,
               SUM(verdict = 'confirmed') AS confirmed_drifts,
               SUM(verdict = 'missed') AS missed_drifts
        FROM ml_executions GROUP BY function_name, version
    ) ml ON ml.function_name = v.function_name AND ml.version = v.version
"""


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


def _sqlite_errors(method):
    """Report SQLite failures as StoreError, the one error callers handle."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"{method.__name__}: {exc}") from exc

    return wrapper


class Store:
    """Owns the SQLite connection; appends events and reads the log and projections."""

    def __init__(self, path: str | os.PathLike, *, synchronous: str = "FULL",
                 clock: Callable[[], float] = time.time):
        """clock gives the append time of events (retention goes by it)."""
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self._path = Path(path)
        self._clock = clock
        self._depth = 0  # atomic() nesting; 0 = no transaction of ours
        self._appended: list[tuple[EventRecord, int]] | None = None  # (event, bytes), by run_group
        try:
            # isolation_level=None: the driver opens no implicit transactions,
            # atomic() issues BEGIN/COMMIT. check_same_thread=False: the thread that
            # opens the store need not be the one that uses it.
            conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self._path}: {exc}") from exc
        self._db = Database(conn, execute_plugins=False)
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

    @property
    def page_token_key(self) -> bytes:
        """The secret that signs this database's page tokens (kept in the file)."""
        return self._page_token_key

    def _signing_key(self, name: str) -> bytes:
        row = self._db.execute("SELECT key FROM signing_keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self.atomic():
                # OR IGNORE: another process may have made it meanwhile; its key wins.
                self._db.execute("INSERT OR IGNORE INTO signing_keys (name, key) VALUES (?, ?)",
                                 (name, secrets.token_hex(32)))
            row = self._db.execute("SELECT key FROM signing_keys WHERE name = ?", (name,)).fetchone()
        return bytes.fromhex(row[0])

    def close(self) -> None:
        try:
            # SQLite's advice for long-lived connections: refresh planner statistics
            # (e.g. timestamp vs position ranges) when closing.
            self._db.conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass  # already closed, or busy: the statistics can wait
        self._db.close()  # closing twice is harmless

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[Store]:
        """One write transaction. A nested block joins the outer transaction through a
        savepoint: its failure undoes only its own work, and nothing is committed before
        the outermost block ends."""
        conn = self._db.conn
        if self._depth:
            savepoint = f"nested_{self._depth}"
            self._exec(f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                if conn.in_transaction:  # an error may have ended it already
                    self._exec(f"ROLLBACK TO {savepoint}")
                    self._exec(f"RELEASE {savepoint}")
                raise
            else:
                self._exec(f"RELEASE {savepoint}")
            finally:
                self._depth -= 1
            return
        # IMMEDIATE takes the write lock now, so the transaction cannot fail
        # half-way with SQLITE_BUSY when it first writes.
        self._exec("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
            self._exec("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    def _exec(self, sql: str) -> None:
        try:
            self._db.conn.execute(sql)
        except sqlite3.Error as exc:
            raise StoreError(f"{sql}: {exc}") from exc

    # -- the log -----------------------------------------------------------

    @_sqlite_errors
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
            # Max + 1 under the write lock, once per batch: gap-free, and a
            # rolled-back insert frees its positions.
            position = self._db.execute(
                "SELECT COALESCE(MAX(position), 0) FROM events"
            ).fetchone()[0]
            conn = self._db.conn
            known: dict[str, int] = {}  # id -> position, of the ids already logged
            for start in range(0, len(events), 500):
                ids = [event.id for event in events[start:start + 500]]
                known.update(conn.execute(
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
            conn.executemany(_EVENT_INSERT, rows)
            # The projector never reads the events table, so projecting after the
            # inserts gives the same rows as projecting after each one.
            for record, _ in stored:
                if record.type in _projector.HANDLERS:
                    _projector.apply(self._db, record)
            if self._appended is not None:
                self._appended.extend(stored)
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
                        if not self._db.conn.in_transaction:
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

    @_sqlite_errors
    def read_events(
        self, after_position: int, flt: EventFilter, limit: int
    ) -> tuple[list[EventRecord], int]:
        """Matching events after `after_position`, and the highest position considered."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        # Bound the read by the last position taken first: events appended meanwhile
        # are left for the next call, so "considered" never skips one.
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
        rows = self._db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
            "ORDER BY position LIMIT ?",
            (*params, limit),
        ).fetchall()
        events = [_event_from_row(row) for row in rows]
        considered = events[-1].position if len(events) == limit else last
        # A caller resuming past the end (nothing to consider) keeps its position.
        return events, max(considered, after_position)

    @_sqlite_errors
    def last_position(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]

    @_sqlite_errors
    def log_start(self) -> int:
        """The first position still in the log: 1 until retention trims the log."""
        return self._db.execute("SELECT COALESCE(MIN(position), 1) FROM events").fetchone()[0]

    @_sqlite_errors
    def trim_log(self, older_than: float, limit: int = 1000) -> int:
        """Retention: delete up to `limit` events from the start of the log, in log
        order, while they were appended before `older_than` (by the store's clock,
        not the timestamp a client gave); stop at the first newer one, so the log
        stays a gap-free run of positions. The last event is always kept, so the
        next position (max + 1) never goes back. Returns how many were deleted."""
        with self.atomic():
            rows = self._db.execute(
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
            return self._db.execute("DELETE FROM events WHERE position <= ?", (cut,)).rowcount

    @_sqlite_errors
    def get_event(self, event_id: str) -> EventRecord | None:
        row = self._db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return _event_from_row(row) if row else None

    # -- projections -------------------------------------------------------

    @_sqlite_errors
    def get_version(self, function_name: str, version: str) -> FunctionVersion | None:
        return self._one_version(
            "WHERE v.function_name = ? AND v.version = ?", (function_name, version)
        )

    @_sqlite_errors
    def current_version(self, function_name: str) -> str | None:
        row = self._db.execute(
            "SELECT current_version FROM functions WHERE name = ?", (function_name,)
        ).fetchone()
        return row[0] if row else None

    @_sqlite_errors
    def list_versions(
        self, function_name: str, *, after_number: int = 0, limit: int = 50
    ) -> list[FunctionVersion]:
        return self._versions(
            "WHERE v.function_name = ? AND v.number > ? ORDER BY v.number LIMIT ?",
            (function_name, after_number, limit),
        )

    @_sqlite_errors
    def next_version_number(self, function_name: str) -> int:
        return self._db.execute(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE function_name = ?",
            (function_name,),
        ).fetchone()[0]

    @_sqlite_errors
    def find_version_by_hash(self, function_name: str, content_hash: str) -> FunctionVersion | None:
        # The newest one if several versions share a hash.
        return self._one_version(
            "WHERE v.function_name = ? AND v.content_hash = ? ORDER BY v.number DESC LIMIT 1",
            (function_name, content_hash),
        )

    @_sqlite_errors
    def get_request(self, request_id: str) -> StoredRequest | None:
        row = self._db.execute(
            "SELECT request_id, operation, fingerprint, result FROM requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if not row:
            return None
        return StoredRequest(row[0], row[1], row[2], json.loads(row[3]))

    @_sqlite_errors
    def rebuild_projections(self) -> None:
        """Clear the projections and replay the whole log, in one transaction."""
        with self.atomic():
            _projector.clear(self._db)
            after = 0
            while True:
                rows = self._db.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? "
                    "ORDER BY position LIMIT ?",
                    (after, _REPLAY_CHUNK),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    _projector.apply(self._db, _event_from_row(row))
                after = rows[-1][0]

    def _versions(self, where: str, params: Sequence[Any]) -> list[FunctionVersion]:
        cursor = self._db.execute(f"{_VERSION_SELECT} {where}", params)
        columns = [d[0] for d in cursor.description]
        return [_version_from_row(dict(zip(columns, row))) for row in cursor.fetchall()]

    def _one_version(self, where: str, params: Sequence[Any]) -> FunctionVersion | None:
        found = self._versions(where, params)
        return found[0] if found else None

    @_sqlite_errors
    def caused_by(self, event_id: str, event_type: str) -> EventRecord | None:
        """The first event of this type whose causation_id is event_id."""
        row = self._db.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE causation_id = ? AND type = ? ORDER BY position LIMIT 1",
            (event_id, event_type),
        ).fetchone()
        return _event_from_row(row) if row else None

    @_sqlite_errors
    def execution_target(self, execution_id: str, correlation_id: str = "") -> tuple[str, str] | None:
        """(function, version) of an ml_monitoring execution, by id or by the
        correlation id of its alert."""
        row = self._db.execute(
            "SELECT function_name, version FROM ml_executions WHERE execution_id = ? "
            "OR (? != '' AND correlation_id = ?) ORDER BY execution_id = ? DESC LIMIT 1",
            (execution_id, correlation_id, correlation_id, execution_id),
        ).fetchone()
        return (row[0], row[1]) if row else None

    @_sqlite_errors
    def drift_verdicts(self, function_name: str, version: str) -> list[tuple[float, str]]:
        """(drift_score, verdict) of each detection of the version that has a verdict."""
        return [
            (row[0], row[1])
            for row in self._db.execute(
                "SELECT drift_score, verdict FROM ml_executions WHERE function_name = ? AND version = ? "
                "AND drift_detected = 1 AND verdict != ''",
                (function_name, version),
            ).fetchall()
        ]

    # -- consumers ---------------------------------------------------------

    @_sqlite_errors
    def consumer_position(self, name: str) -> int:
        """Where the named log consumer has got to (0 if it never ran)."""
        row = self._db.execute("SELECT position FROM consumers WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    @_sqlite_errors
    def set_consumer_position(self, name: str, position: int) -> None:
        """Record the consumer's progress (joins an outer atomic(), so progress and
        the events it derived commit together).

        On its own (outside a transaction) it commits without an fsync of its own
        (synchronous=NORMAL for that commit): it survives a crash of the process, and
        the next durable commit fsyncs it; only a power loss before then can take the
        consumer back to its previous position, and consumers replay idempotently.
        Consumers save often, and an fsync each would stall the log's writer."""
        relaxed = self._depth == 0 and self._synchronous == "FULL"
        if relaxed:
            self._db.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with self.atomic():
                self._db.execute(
                    "INSERT INTO consumers (name, position) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    (name, position),
                )
        finally:
            if relaxed:
                self._db.conn.execute("PRAGMA synchronous = FULL")

    # -- feedback reviews (the learning loop) ------------------------------

    @_sqlite_errors
    def feedback_reviewed(self, feedback_id: str) -> bool:
        """True once the learning loop reviewed this feedback without making a version."""
        row = self._db.execute("SELECT 1 FROM feedback_reviews WHERE feedback_id = ?", (feedback_id,)).fetchone()
        return row is not None

    @_sqlite_errors
    def record_feedback_review(self, feedback_id: str, reviewed_at: float) -> None:
        with self.atomic():
            self._db.execute(
                "INSERT OR IGNORE INTO feedback_reviews (feedback_id, reviewed_at) VALUES (?, ?)",
                (feedback_id, reviewed_at),
            )

    # -- quotas ------------------------------------------------------------

    @_sqlite_errors
    def quota_usage(self, principal: str, function_name: str) -> QuotaUsage:
        """What principal has stored: functions it created, its versions of function_name, bytes of code."""
        functions, size = self._db.execute(
            "SELECT functions, bytes FROM principal_usage WHERE principal = ?", (principal,)
        ).fetchone() or (0, 0)
        versions = self._db.execute(
            "SELECT versions FROM function_usage WHERE principal = ? AND function_name = ?", (principal, function_name)
        ).fetchone()
        return QuotaUsage(functions, versions[0] if versions else 0, size)

    @_sqlite_errors
    def charge_quota(self, principal: str, function_name: str, *, created_function: bool, size: int) -> None:
        """Count one more version of function_name (size bytes of code) against principal;
        joins the transaction that stores the version, so both commit or neither."""
        with self.atomic():
            self._db.execute(
                "INSERT INTO principal_usage (principal, functions, bytes) VALUES (?, ?, ?) "
                "ON CONFLICT (principal) DO UPDATE SET functions = functions + excluded.functions, "
                "bytes = bytes + excluded.bytes",
                (principal, int(created_function), size),
            )
            self._db.execute(
                "INSERT INTO function_usage (principal, function_name, versions, bytes) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (principal, function_name) DO UPDATE SET versions = versions + 1, "
                "bytes = bytes + excluded.bytes",
                (principal, function_name, size),
            )

    # -- dead letters (integrations) ---------------------------------------

    @_sqlite_errors
    def add_dead_letter(self, sink: str, event: EventRecord, *, attempts: int, error: str,
                        first_failure_at: float, last_failure_at: float) -> int:
        """Record an event a sink gave up on; its id."""
        with self.atomic():
            cursor = self._db.execute(
                "INSERT INTO dead_letters (sink, event_id, event_position, event_type, function_name, attempts, "
                "last_error, first_failure_at, last_failure_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (sink, event.id, event.position, event.type, event.function_name, attempts, error,
                 first_failure_at, last_failure_at),
            )
            return cursor.lastrowid

    @_sqlite_errors
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
        return list(self._db.query(
            f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY event_position, id LIMIT ?"
            if pending_only else f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
            [*params, limit],
        ))

    @_sqlite_errors
    def update_dead_letter(self, dead_letter_id: int, *, status: str, attempts: int, error: str,
                           failed_at: float | None) -> None:
        with self.atomic():
            self._db.execute(
                "UPDATE dead_letters SET status = ?, attempts = ?, last_error = ?, "
                "last_failure_at = COALESCE(?, last_failure_at) WHERE id = ?",
                (status, attempts, error, failed_at, dead_letter_id),
            )

    # -- maintenance -------------------------------------------------------

    @_sqlite_errors
    def integrity_check(self) -> str:
        rows = self._db.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(row[0] for row in rows)

    def schema_version(self) -> int:
        return self._schema_version


def _event_from_row(row: Sequence[Any]) -> EventRecord:
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
        metadata=json.loads(metadata),
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
