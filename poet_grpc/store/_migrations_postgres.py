"""Versioned schema migrations of the PostgreSQL engine.

The same numbering as SQLite's (_migrations.py): one schema version names one
schema on both engines. PostgreSQL starts at version 5, the SQLite schema that
migrations 1 to 5 build, written as one piece of DDL. Each migration runs in its own
transaction together with its record in `schema_migrations` (PostgreSQL's DDL is
transactional: a failed migration leaves the database at the previous version),
under the store's write lock, so replicas starting together migrate one at a time.
A new migration goes at the end of MIGRATIONS here and in _migrations.py; never edit
one that has shipped.

Every text column is COLLATE "C": it compares byte by byte as SQLite does, whatever
the database's locale (the type-prefix filter is a range on `type`, and a locale's
collation would order "drift.x" and "drift/" differently).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from ._errors import StoreError

TEXT = 'text COLLATE "C"'

_005_SCHEMA = f"""
-- The log. Positions are assigned by the store (max + 1 under the write lock), not
-- by a sequence: a rolled-back append frees its positions, so they stay gap-free.
CREATE TABLE events (
    position bigint PRIMARY KEY,
    id {TEXT} NOT NULL,
    type {TEXT} NOT NULL,
    source {TEXT} NOT NULL,
    timestamp double precision NOT NULL,
    function_name {TEXT} NOT NULL DEFAULT '',
    correlation_id {TEXT} NOT NULL DEFAULT '',
    causation_id {TEXT} NOT NULL DEFAULT '',
    payload {TEXT} NOT NULL DEFAULT '{{}}',  -- JSON
    metadata {TEXT} NOT NULL DEFAULT '{{}}',  -- JSON
    appended_at double precision NOT NULL DEFAULT 0  -- by the store's clock: retention goes by it
);
CREATE UNIQUE INDEX events_by_id ON events (id);
-- Each filter of read_events is (column, position): a filtered read walks the index
-- in log order from its resume position.
CREATE INDEX events_by_function_name ON events (function_name, position);
CREATE INDEX events_by_type ON events (type, position);
CREATE INDEX events_by_correlation_id ON events (correlation_id, position);
CREATE INDEX events_by_timestamp ON events (timestamp, position);
CREATE INDEX events_by_causation ON events (causation_id, type);

-- Projections: derived from the log by the projector, rebuilt by replaying it.
CREATE TABLE functions (
    name {TEXT} PRIMARY KEY,
    current_version {TEXT} NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE versions (
    function_name {TEXT} NOT NULL,
    number bigint NOT NULL,
    version {TEXT} NOT NULL,
    content_hash {TEXT} NOT NULL,
    parent_version {TEXT},
    status {TEXT} NOT NULL,
    created_at double precision NOT NULL,
    original_code {TEXT},
    domain {TEXT},
    optimize_for {TEXT},
    context {TEXT},  -- JSON
    dana_source {TEXT},
    config {TEXT},  -- JSON
    python_code {TEXT},
    dana_code {TEXT},
    optimizations {TEXT},  -- JSON list
    safety_level double precision,
    generator {TEXT},
    params {TEXT},  -- JSON
    update_reason {TEXT} NOT NULL DEFAULT '',
    PRIMARY KEY (function_name, number)
);
CREATE UNIQUE INDEX versions_by_label ON versions (function_name, version);
CREATE INDEX versions_by_hash ON versions (function_name, content_hash);
-- Mutable counters kept apart from the immutable version row. The sum of ratings
-- (not a running average) keeps the mean exact across replays.
CREATE TABLE metrics (
    function_name {TEXT} NOT NULL,
    version {TEXT} NOT NULL,
    success_rate double precision NOT NULL DEFAULT 0,
    avg_duration double precision NOT NULL DEFAULT 0,
    error_rate double precision NOT NULL DEFAULT 0,
    feedback_count bigint NOT NULL DEFAULT 0,
    rating_count bigint NOT NULL DEFAULT 0,
    rating_sum double precision NOT NULL DEFAULT 0,
    execution_count bigint NOT NULL DEFAULT 0,
    failure_count bigint NOT NULL DEFAULT 0,
    timeout_count bigint NOT NULL DEFAULT 0,
    transient_count bigint NOT NULL DEFAULT 0,
    duration_sum_ms double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (function_name, version)
);
CREATE TABLE requests (
    request_id {TEXT} PRIMARY KEY,
    operation {TEXT} NOT NULL,
    fingerprint {TEXT} NOT NULL,
    result {TEXT} NOT NULL,  -- JSON
    created_at double precision NOT NULL
);
-- One row per ml_monitoring execution: did it report drift, and what did people (or
-- a retraining) say about it. rowid: insertion order, as SQLite's implicit rowid
-- (the projector orders by it). drift_detected is an integer, so SUM stays an integer.
CREATE TABLE ml_executions (
    execution_id {TEXT} PRIMARY KEY,
    function_name {TEXT} NOT NULL,
    version {TEXT} NOT NULL,
    drift_detected integer NOT NULL DEFAULT 0,
    drift_score double precision NOT NULL DEFAULT 0,
    drift_event_id {TEXT} NOT NULL DEFAULT '',
    correlation_id {TEXT} NOT NULL DEFAULT '',
    verdict {TEXT} NOT NULL DEFAULT '',  -- '', false_positive, confirmed, missed, true_negative
    rowid bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX ml_executions_by_version ON ml_executions (function_name, version);
CREATE INDEX ml_executions_by_correlation ON ml_executions (correlation_id);

-- Consumer, learning-loop and quota state, not projections: a rebuild keeps them.
CREATE TABLE consumers (name {TEXT} PRIMARY KEY, position bigint NOT NULL);
-- Events an outbound sink gave up on. status: pending, replayed.
CREATE TABLE dead_letters (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    sink {TEXT} NOT NULL,
    event_id {TEXT} NOT NULL,
    event_position bigint NOT NULL,
    event_type {TEXT} NOT NULL,
    function_name {TEXT} NOT NULL DEFAULT '',
    attempts bigint NOT NULL,
    last_error {TEXT} NOT NULL DEFAULT '',
    first_failure_at double precision NOT NULL,
    last_failure_at double precision NOT NULL,
    status {TEXT} NOT NULL DEFAULT 'pending'
);
CREATE INDEX dead_letters_by_sink ON dead_letters (sink, id);
-- Secrets of this database (e.g. the key that signs page tokens).
CREATE TABLE signing_keys (name {TEXT} PRIMARY KEY, key {TEXT} NOT NULL);
CREATE TABLE principal_usage (
    principal {TEXT} PRIMARY KEY,
    functions bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0
);
CREATE TABLE function_usage (
    principal {TEXT} NOT NULL,
    function_name {TEXT} NOT NULL,
    versions bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (principal, function_name)
);
CREATE TABLE feedback_reviews (feedback_id {TEXT} PRIMARY KEY, reviewed_at double precision NOT NULL);
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (5, "event log, projections, consumers, dead letters, quotas (the SQLite schema at version 5)", _005_SCHEMA),
]

_HISTORY = ("CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)")


def schema_version(execute: Callable) -> int:
    return execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(execute: Callable, atomic: Callable[[], AbstractContextManager]) -> int:
    """Apply every migration newer than the database's version; return the version reached."""
    latest = MIGRATIONS[-1][0]
    with atomic():  # under the write lock: replicas starting together do not race to create it
        execute(_HISTORY)
    for number, name, ddl in MIGRATIONS:
        with atomic():
            # Read under the write lock: another replica may have migrated meanwhile.
            current = schema_version(execute)
            if current > latest:
                raise StoreError(f"database schema version {current} is newer than this code supports ({latest})")
            if current >= number:
                continue
            execute(ddl)
            execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (number, name, time.time()))
    return schema_version(execute)
