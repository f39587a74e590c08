"""Versioned schema migrations.

Each migration is a numbered function that changes the schema; it runs in its own
transaction together with its record in `schema_migrations` and `PRAGMA user_version`,
so a failed migration leaves the file at the previous version. Add new migrations at
the end of MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlite_utils import Database

from ._errors import StoreError

Migration = Callable[[Database], None]


def _001_event_log_and_projections(db: Database) -> None:
    # The log. `position INTEGER PRIMARY KEY` aliases the rowid WITHOUT AUTOINCREMENT:
    # a rolled-back append frees its position, so positions stay gap-free.
    db.table("events").create(
        {
            "position": int,
            "id": str,
            "type": str,
            "source": str,
            "timestamp": float,
            "function_name": str,
            "correlation_id": str,
            "causation_id": str,
            "payload": str,  # JSON
            "metadata": str,  # JSON
        },
        pk="position",
        not_null=["id", "type", "source", "timestamp", "function_name",
                  "correlation_id", "causation_id", "payload", "metadata"],
        defaults={"function_name": "", "correlation_id": "", "causation_id": "",
                  "payload": "{}", "metadata": "{}"},
    )
    events = db.table("events")
    events.create_index(["id"], index_name="events_by_id", unique=True)
    # Each filter of read_events is (column, position), so a filtered read walks the
    # index in log order from its resume position and stops after `limit` rows.
    for column in ("function_name", "type", "correlation_id", "timestamp"):
        events.create_index([column, "position"], index_name=f"events_by_{column}")

    # Projections: derived from the log by the projector, rebuilt by replaying it.
    db.table("functions").create(
        {"name": str, "current_version": str, "created_at": float, "updated_at": float},
        pk="name",
        not_null=["current_version", "created_at", "updated_at"],
    )
    db.table("versions").create(
        {
            "function_name": str,
            "number": int,
            "version": str,
            "content_hash": str,
            "parent_version": str,
            "status": str,
            "created_at": float,
            "original_code": str,
            "domain": str,
            "optimize_for": str,
            "context": str,  # JSON
            "dana_source": str,
            "config": str,  # JSON
            "python_code": str,
            "dana_code": str,
            "optimizations": str,  # JSON list
            "safety_level": float,
            "generator": str,
            "params": str,  # JSON
        },
        pk=("function_name", "number"),
        not_null=["version", "content_hash", "status", "created_at"],
    )
    versions = db.table("versions")
    versions.create_index(["function_name", "version"], index_name="versions_by_label", unique=True)
    versions.create_index(["function_name", "content_hash"], index_name="versions_by_hash")
    # Mutable counters kept apart from the immutable version row. The sum of
    # ratings (not a running average) keeps the mean exact across replays.
    db.table("metrics").create(
        {
            "function_name": str,
            "version": str,
            "success_rate": float,
            "avg_duration": float,
            "error_rate": float,
            "feedback_count": int,
            "rating_count": int,
            "rating_sum": float,
        },
        pk=("function_name", "version"),
        not_null=["success_rate", "avg_duration", "error_rate",
                  "feedback_count", "rating_count", "rating_sum"],
        defaults={"success_rate": 0.0, "avg_duration": 0.0, "error_rate": 0.0,
                  "feedback_count": 0, "rating_count": 0, "rating_sum": 0.0},
    )
    db.table("requests").create(
        {"request_id": str, "operation": str, "fingerprint": str,
         "result": str, "created_at": float},  # result is JSON
        pk="request_id",
        not_null=["operation", "fingerprint", "result", "created_at"],
    )


def _002_learning(db: Database) -> None:
    # Execution evidence from function.execution events, beside the reported metrics.
    metrics = db.table("metrics")
    for column, kind in (("execution_count", int), ("failure_count", int), ("timeout_count", int),
                         ("transient_count", int), ("duration_sum_ms", float)):
        metrics.add_column(column, kind, not_null_default=0)
    db.table("versions").add_column("update_reason", str, not_null_default="")
    # What an event caused (e.g. the version a piece of feedback triggered).
    db.table("events").create_index(["causation_id", "type"], index_name="events_by_causation")
    # One row per ml_monitoring execution: did it report drift, and what did people
    # (or a retraining) say about it. Rates are counted from the verdicts.
    db.table("ml_executions").create(
        {
            "execution_id": str,
            "function_name": str,
            "version": str,
            "drift_detected": int,
            "drift_score": float,
            "drift_event_id": str,
            "correlation_id": str,
            "verdict": str,  # "", false_positive, confirmed, missed, true_negative
        },
        pk="execution_id",
        not_null=["function_name", "version", "drift_detected", "drift_score", "drift_event_id", "correlation_id", "verdict"],
        defaults={"drift_detected": 0, "drift_score": 0.0, "drift_event_id": "", "correlation_id": "", "verdict": ""},
    )
    db.table("ml_executions").create_index(["function_name", "version"], index_name="ml_executions_by_version")
    db.table("ml_executions").create_index(["correlation_id"], index_name="ml_executions_by_correlation")
    # Where each log consumer (e.g. the learning loop) has got to. Consumer state,
    # not a projection: a rebuild keeps it.
    db.table("consumers").create({"name": str, "position": int}, pk="name", not_null=["position"])


def _003_dead_letters(db: Database) -> None:
    # Events an outbound sink gave up on (integrations). Consumer state, not a
    # projection: a rebuild keeps it. status: pending, replayed.
    db.table("dead_letters").create(
        {
            "id": int,
            "sink": str,
            "event_id": str,
            "event_position": int,
            "event_type": str,
            "function_name": str,
            "attempts": int,
            "last_error": str,
            "first_failure_at": float,
            "last_failure_at": float,
            "status": str,
        },
        pk="id",
        not_null=["sink", "event_id", "event_position", "event_type", "function_name", "attempts",
                  "last_error", "first_failure_at", "last_failure_at", "status"],
        defaults={"function_name": "", "last_error": "", "status": "pending"},
    )
    db.table("dead_letters").create_index(["sink", "id"], index_name="dead_letters_by_sink")


def _004_append_time_and_signing_keys(db: Database) -> None:
    # When the service appended each event: retention (and so the dedup window)
    # goes by it, never by the timestamp a client claims. Old rows take their
    # timestamp, capped at now, so no claimed future time blocks trimming.
    db.table("events").add_column("appended_at", float, not_null_default=0.0)
    db.execute("UPDATE events SET appended_at = MIN(timestamp, ?)", [time.time()])
    # Secrets of this database (e.g. the key that signs page tokens), so tokens
    # outlive a restart. The store creates each on first use.
    db.table("signing_keys").create({"name": str, "key": str}, pk="name", not_null=["key"])


def _005_quotas_and_feedback_reviews(db: Database) -> None:
    # What each caller has stored, charged in the transaction that stores a version
    # (events do not say whom to charge). Quota state, not a projection: a rebuild
    # keeps it. principal_usage: functions created and code bytes per caller;
    # function_usage: versions (and bytes) per caller and function.
    db.table("principal_usage").create(
        {"principal": str, "functions": int, "bytes": int},
        pk="principal", not_null=["functions", "bytes"], defaults={"functions": 0, "bytes": 0},
    )
    db.table("function_usage").create(
        {"principal": str, "function_name": str, "versions": int, "bytes": int},
        pk=("principal", "function_name"), not_null=["versions", "bytes"], defaults={"versions": 0, "bytes": 0},
    )
    # Feedback the learning loop reviewed without making a new version (one that did
    # is the causation of that version's enhancement.completed). Learning-loop
    # state, not a projection: a rebuild keeps it.
    db.table("feedback_reviews").create(
        {"feedback_id": str, "reviewed_at": float}, pk="feedback_id", not_null=["reviewed_at"],
    )


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "event log and projections", _001_event_log_and_projections),
    (2, "learning: execution evidence, drift verdicts, consumer positions", _002_learning),
    (3, "integrations: dead letters of outbound sinks", _003_dead_letters),
    (4, "event append times; signing keys", _004_append_time_and_signing_keys),
    (5, "quota usage per caller; feedback reviews", _005_quotas_and_feedback_reviews),
]


def user_version(db: Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database, atomic: Callable[[], AbstractContextManager]) -> int:
    """Apply every migration newer than the file's version; return the version reached."""
    latest = MIGRATIONS[-1][0] if MIGRATIONS else 0
    current = user_version(db)
    if current > latest:
        raise StoreError(
            f"database schema version {current} is newer than this code supports ({latest})"
        )
    for number, name, migration in MIGRATIONS:
        if number <= current:
            continue
        with atomic():
            # Re-read under the write lock: another process may have migrated meanwhile.
            if user_version(db) >= number:
                continue
            db.table("schema_migrations").create(
                {"version": int, "name": str, "applied_at": float},
                pk="version",
                if_not_exists=True,
            )
            migration(db)
            db.table("schema_migrations").insert(
                {"version": number, "name": name, "applied_at": time.time()}
            )
            # user_version lives in the file header, which is journaled: it rolls
            # back with the migration if anything above fails.
            db.execute(f"PRAGMA user_version = {int(number)}")
    return user_version(db)
