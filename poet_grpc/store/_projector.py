"""The projector: applies one logged event to the projection tables.

It runs inside the transaction that appends the event (or that replays the log), so
a projection never disagrees with the log. Handlers must depend only on the event
and on earlier projections - never on the clock - so a replay gives the same rows.
To project a new event type, add a handler to HANDLERS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.learning import retraining_helped
from ..core.models import EventRecord
from ._errors import StoreError

if TYPE_CHECKING:
    from ._store import Sql

ENHANCEMENT_COMPLETED = "enhancement.completed"
FUNCTION_FEEDBACK = "function.feedback"
FUNCTION_EXECUTION = "function.execution"
FUNCTION_UPDATE = "function.update"
VERSION_ACTIVATED = "version.activated"
VERSION_DEPRECATED = "version.deprecated"
DRIFT_DETECTED = "drift.detected"
MONITORING_COMPLETED = "monitoring.completed"
ALERT_CREATE_EXTERNAL = "alert.create_external"
HUMAN_VALIDATION = "feedback.human_validation"
MODEL_RETRAINED = "feedback.model_retrained"
ALERT_RESOLVED = "feedback.alert_resolved"
MLFLOW_VALIDATION = "feedback.mlflow_validation"

# Errors an enhanced function retries (Operate); counted apart to guide learning.
TRANSIENT_ERRORS = frozenset({"ConnectionError", "ConnectionResetError", "ConnectionRefusedError",
                              "ConnectionAbortedError", "BrokenPipeError", "TimeoutError"})

# Cleared and refilled by a rebuild. A migration adding a projection adds it here.
PROJECTION_TABLES = ("functions", "versions", "metrics", "requests", "ml_executions")

Handler = Callable[["Sql", EventRecord], None]


def apply(db: Sql, event: EventRecord) -> None:
    """Project one event; StoreError if its payload cannot be projected."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return  # logged only
    try:
        handler(db, event)
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, *db.errors) as exc:
        raise StoreError(
            f"cannot project event {event.id!r} ({event.type}): {exc!r}"
        ) from exc


def clear(db: Sql) -> None:
    for table in PROJECTION_TABLES:
        db.execute(f"DELETE FROM {table}")


def _insert(db: Sql, table: str, row: dict[str, Any]) -> None:
    """Insert one row; dict and list values are stored as JSON text."""
    values = [json.dumps(v, default=repr, ensure_ascii=False) if isinstance(v, (dict, list)) else v
              for v in row.values()]
    db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", values)


def _on_enhancement_completed(db: Sql, event: EventRecord) -> None:
    p = event.payload
    name, version, number = p["function_name"], p["version"], int(p["number"])
    taken = db.execute(
        "SELECT version FROM versions WHERE function_name = ? AND number = ?", (name, number)
    ).fetchone()
    if taken:
        raise StoreError(f"{name} already has version number {number} ({taken[0]})")
    _insert(db, "versions", {
        "function_name": name,
        "number": number,
        "version": version,
        "content_hash": p["content_hash"],
        "parent_version": p["parent_version"],
        "status": p["status"],
        "created_at": event.timestamp,
        "original_code": p["original_code"],
        "domain": p["domain"],
        "optimize_for": p["optimize_for"],
        "context": p["context"],
        "dana_source": p["dana_source"],
        "config": p["config"],
        "python_code": p["python_code"],
        "dana_code": p["dana_code"],
        "optimizations": list(p["optimizations"]),
        "safety_level": float(p["safety_level"]),
        "generator": p["generator"],
        "params": p["params"],
        "update_reason": p.get("update_reason") or "",
    })
    _insert(db, "metrics", {"function_name": name, "version": version})  # all zero
    # The newest version becomes current.
    db.execute(
        """
        INSERT INTO functions (name, current_version, created_at, updated_at)
        VALUES (?, ?, ?, ?)
        ON CONFLICT (name) DO UPDATE
        SET current_version = excluded.current_version, updated_at = excluded.updated_at
        """,
        (name, version, event.timestamp, event.timestamp),
    )
    _record_request(db, event, {"function_name": name, "version": version})


def _on_function_feedback(db: Sql, event: EventRecord) -> None:
    p = event.payload
    name, version = p["function_name"], p["version"]
    rating = p.get("rating")
    rating = None if rating is None else float(rating)
    reported = p.get("metrics") or {}

    def _reported(key: str) -> float | None:
        value = reported.get(key)
        return None if value is None else float(value)

    # COALESCE keeps a rate the report does not carry; a reported one replaces it.
    cursor = db.execute(
        """
        UPDATE metrics SET
            feedback_count = feedback_count + 1,
            rating_count = rating_count + :rated,
            rating_sum = rating_sum + :rating,
            success_rate = COALESCE(:success_rate, success_rate),
            avg_duration = COALESCE(:avg_duration, avg_duration),
            error_rate = COALESCE(:error_rate, error_rate)
        WHERE function_name = :name AND version = :version
        """,
        {
            "rated": 0 if rating is None else 1,
            "rating": rating or 0.0,
            "success_rate": _reported("success_rate"),
            "avg_duration": _reported("avg_duration"),
            "error_rate": _reported("error_rate"),
            "name": name,
            "version": version,
        },
    )
    if cursor.rowcount == 0:
        raise StoreError(f"feedback for unknown version {name} {version}")
    _record_request(db, event, {"feedback_id": event.id})


def _record_request(db: Sql, event: EventRecord, result: dict[str, Any]) -> None:
    """Remember which request produced this event, so a retry gets the same answer."""
    request_id = event.payload.get("request_id") or ""
    if not request_id:
        return
    if db.execute("SELECT 1 FROM requests WHERE request_id = ?", (request_id,)).fetchone():
        raise StoreError(f"request {request_id!r} is already recorded")
    _insert(db, "requests", {
        "request_id": request_id,
        "operation": event.type,
        "fingerprint": event.payload.get("request_fingerprint") or "",
        "result": json.dumps(result),
        "created_at": event.timestamp,
    })


def _version_of(db: Sql, event: EventRecord) -> tuple[str, str] | None:
    """(function, version) an inbound event is about: its payload's version, else the
    function's current version at this point of the log; None if unknown.
    Inbound events about unknown functions are logged but project nothing."""
    p = event.payload
    name = p.get("function_name") or event.function_name
    if not name:
        return None
    version = p.get("version") or ""
    if not version:
        row = db.execute("SELECT current_version FROM functions WHERE name = ?", (name,)).fetchone()
        version = row[0] if row else ""
    exists = db.execute(
        "SELECT 1 FROM versions WHERE function_name = ? AND version = ?", (name, version)
    ).fetchone()
    return (name, version) if exists else None


def _on_function_execution(db: Sql, event: EventRecord) -> None:
    target = _version_of(db, event)
    if target is None:
        return
    p = event.payload
    failed = p.get("status") == "failure"
    error_type = str((p.get("error") or {}).get("type") or "") if failed else ""
    duration = float((p.get("metrics") or {}).get("duration_ms") or 0.0)
    db.execute(
        """
        UPDATE metrics SET
            execution_count = execution_count + 1,
            failure_count = failure_count + :failed,
            timeout_count = timeout_count + :timeout,
            transient_count = transient_count + :transient,
            duration_sum_ms = duration_sum_ms + :duration
        WHERE function_name = :name AND version = :version
        """,
        {
            "failed": int(failed),
            "timeout": int(error_type == "TimeoutError"),
            "transient": int(error_type in TRANSIENT_ERRORS),
            "duration": max(0.0, duration),
            "name": target[0],
            "version": target[1],
        },
    )


def _set_status(db: Sql, name: str, version: str, status: str) -> None:
    cursor = db.execute(
        "UPDATE versions SET status = ? WHERE function_name = ? AND version = ?", (status, name, version)
    )
    if cursor.rowcount == 0:
        raise StoreError(f"unknown version {name} {version}")


def _on_function_update(db: Sql, event: EventRecord) -> None:
    # The new version became current with its enhancement.completed; the old one retires.
    p = event.payload
    _set_status(db, p["function_name"], p["old_version"], "deprecated")


def _on_version_activated(db: Sql, event: EventRecord) -> None:
    p = event.payload
    name, version = p["function_name"], p["version"]
    _set_status(db, name, version, "active")
    db.execute(
        "UPDATE functions SET current_version = ?, updated_at = ? WHERE name = ?",
        (version, event.timestamp, name),
    )


def _on_version_deprecated(db: Sql, event: EventRecord) -> None:
    p = event.payload
    _set_status(db, p["function_name"], p["version"], "deprecated")


def _record_execution(db: Sql, event: EventRecord, *, drift: bool) -> None:
    execution_id = event.payload.get("execution_id") or ""
    target = _version_of(db, event)
    if not execution_id or target is None:
        return
    db.execute(
        """
        INSERT INTO ml_executions (execution_id, function_name, version, drift_detected, drift_score, drift_event_id, correlation_id)
        VALUES (:id, :name, :version, :drift, :score, :event, :correlation)
        ON CONFLICT (execution_id) DO UPDATE SET
            drift_detected = CASE WHEN excluded.drift_detected = 1 THEN 1 ELSE ml_executions.drift_detected END,
            drift_score = CASE WHEN excluded.drift_detected = 1 THEN excluded.drift_score ELSE ml_executions.drift_score END,
            drift_event_id = CASE WHEN excluded.drift_detected = 1 THEN excluded.drift_event_id
                                  ELSE ml_executions.drift_event_id END,
            correlation_id = CASE WHEN ml_executions.correlation_id = '' THEN excluded.correlation_id
                                  ELSE ml_executions.correlation_id END
        """,
        {
            "id": execution_id,
            "name": target[0],
            "version": target[1],
            "drift": int(drift),
            "score": float(event.payload.get("drift_score") or 0.0) if drift else 0.0,
            "event": event.id if drift else "",
            "correlation": event.correlation_id,
        },
    )


def _on_drift_detected(db: Sql, event: EventRecord) -> None:
    _record_execution(db, event, drift=True)


def _on_monitoring_completed(db: Sql, event: EventRecord) -> None:
    _record_execution(db, event, drift=False)


def _on_alert(db: Sql, event: EventRecord) -> None:
    # The alert's correlation id is how people's verdicts find the execution again.
    if event.causation_id and event.correlation_id:
        db.execute(
            "UPDATE ml_executions SET correlation_id = ? WHERE drift_event_id = ?",
            (event.correlation_id, event.causation_id),
        )


def _execution_for(db: Sql, event: EventRecord) -> str | None:
    """The ml execution a verdict is about: by execution_id, else by correlation id."""
    execution_id = event.payload.get("execution_id") or ""
    if execution_id and db.execute("SELECT 1 FROM ml_executions WHERE execution_id = ?", (execution_id,)).fetchone():
        return execution_id
    if event.correlation_id:
        # The latest one recorded (rowid: insertion order; the PostgreSQL schema has a column of that name).
        row = db.execute(
            "SELECT execution_id FROM ml_executions WHERE correlation_id = ? ORDER BY rowid DESC LIMIT 1",
            (event.correlation_id,),
        ).fetchone()
        if row:
            return row[0]
    return None


def _on_human_validation(db: Sql, event: EventRecord) -> None:
    execution_id = _execution_for(db, event)
    if execution_id is None:
        return
    real = bool(event.payload.get("was_real_drift"))
    detected = db.execute(
        "SELECT drift_detected FROM ml_executions WHERE execution_id = ?", (execution_id,)
    ).fetchone()[0]
    verdict = {(True, False): "false_positive", (True, True): "confirmed",
               (False, True): "missed", (False, False): "true_negative"}[(bool(detected), real)]
    db.execute("UPDATE ml_executions SET verdict = ? WHERE execution_id = ?", (verdict, execution_id))


def _on_model_retrained(db: Sql, event: EventRecord) -> None:
    # A retraining that did not help says the drift alert was not worth acting on,
    # unless people already gave a verdict on it.
    execution_id = _execution_for(db, event)
    if retraining_helped(event.payload) or execution_id is None:
        return
    db.execute(
        "UPDATE ml_executions SET verdict = 'false_positive' WHERE execution_id = ? AND verdict = '' AND drift_detected = 1",
        (execution_id,),
    )


def _on_external_verdict(db: Sql, event: EventRecord) -> None:
    # Integrations (seed 002): a resolved PagerDuty alert that was a false alarm, or an
    # MLflow tag, is a drift verdict too, unless the detection already has one.
    execution_id = _execution_for(db, event)
    if execution_id is None:
        return
    p = event.payload
    if event.type == ALERT_RESOLVED:
        verdict = "confirmed" if p.get("was_useful", True) else "false_positive"
    else:
        verdict = {"false_positive": "false_positive", "confirmed_drift": "confirmed"}.get(p.get("validation_type"))
        if verdict is None:
            return
    db.execute(
        "UPDATE ml_executions SET verdict = ? WHERE execution_id = ? AND verdict = '' AND drift_detected = 1",
        (verdict, execution_id),
    )


HANDLERS: dict[str, Handler] = {
    ENHANCEMENT_COMPLETED: _on_enhancement_completed,
    FUNCTION_FEEDBACK: _on_function_feedback,
    FUNCTION_EXECUTION: _on_function_execution,
    FUNCTION_UPDATE: _on_function_update,
    VERSION_ACTIVATED: _on_version_activated,
    VERSION_DEPRECATED: _on_version_deprecated,
    DRIFT_DETECTED: _on_drift_detected,
    MONITORING_COMPLETED: _on_monitoring_completed,
    ALERT_CREATE_EXTERNAL: _on_alert,
    HUMAN_VALIDATION: _on_human_validation,
    MODEL_RETRAINED: _on_model_retrained,
    ALERT_RESOLVED: _on_external_verdict,
    MLFLOW_VALIDATION: _on_external_verdict,
}
