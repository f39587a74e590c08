"""The projector: applies one logged event to the projection tables.

It runs inside the transaction that appends the event (or that replays the log), so
a projection never disagrees with the log. Handlers must depend only on the event
and on earlier projections - never on the clock - so a replay gives the same rows.
To project a new event type, add a handler to HANDLERS.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlite_utils import Database

from ..core.models import EventRecord
from ._errors import StoreError

ENHANCEMENT_COMPLETED = "enhancement.completed"
FUNCTION_FEEDBACK = "function.feedback"

# Cleared and refilled by a rebuild. A migration adding a projection adds it here.
PROJECTION_TABLES = ("functions", "versions", "metrics", "requests")

Handler = Callable[[Database, EventRecord], None]


def apply(db: Database, event: EventRecord) -> None:
    """Project one event; StoreError if its payload cannot be projected."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return  # logged only
    try:
        handler(db, event)
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError, sqlite3.Error) as exc:
        raise StoreError(
            f"cannot project event {event.id!r} ({event.type}): {exc!r}"
        ) from exc


def clear(db: Database) -> None:
    for table in PROJECTION_TABLES:
        db.execute(f"DELETE FROM {table}")


def _on_enhancement_completed(db: Database, event: EventRecord) -> None:
    p = event.payload
    name, version, number = p["function_name"], p["version"], int(p["number"])
    taken = db.execute(
        "SELECT version FROM versions WHERE function_name = ? AND number = ?", (name, number)
    ).fetchone()
    if taken:
        raise StoreError(f"{name} already has version number {number} ({taken[0]})")
    # sqlite-utils stores dict and list values as JSON text.
    db.table("versions").insert(
        {
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
        }
    )
    db.table("metrics").insert({"function_name": name, "version": version})  # all zero
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


def _on_function_feedback(db: Database, event: EventRecord) -> None:
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


def _record_request(db: Database, event: EventRecord, result: dict[str, Any]) -> None:
    """Remember which request produced this event, so a retry gets the same answer."""
    request_id = event.payload.get("request_id") or ""
    if not request_id:
        return
    if db.execute("SELECT 1 FROM requests WHERE request_id = ?", (request_id,)).fetchone():
        raise StoreError(f"request {request_id!r} is already recorded")
    db.table("requests").insert(
        {
            "request_id": request_id,
            "operation": event.type,
            "fingerprint": event.payload.get("request_fingerprint") or "",
            "result": json.dumps(result),
            "created_at": event.timestamp,
        }
    )


HANDLERS: dict[str, Handler] = {
    ENHANCEMENT_COMPLETED: _on_enhancement_completed,
    FUNCTION_FEEDBACK: _on_function_feedback,
}
