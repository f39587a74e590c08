"""Fixtures for the store tests: a store on each engine (SQLite on a temporary file,
PostgreSQL in a fresh database of the tests' own server), and event factories."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from poet_grpc.core.models import EventRecord
from poet_grpc.store import BaseStore, Store

EventFactory = Callable[..., EventRecord]
StoreOpener = Callable[..., BaseStore]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "poet.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request) -> str:
    return request.param


@pytest.fixture
def open_store(request, engine: str, db_path: Path) -> Iterator[StoreOpener]:
    """Opens a store (keyword arguments: the engine's) on this test's database; every
    one opened is closed at the end."""
    opened: list[BaseStore] = []
    if engine == "sqlite":
        def make(**options: Any) -> BaseStore:
            return Store(db_path, **options)
    else:
        from poet_grpc.store import PostgresStore

        url = request.getfixturevalue("postgres_url")

        def make(**options: Any) -> BaseStore:
            return PostgresStore(url, **options)

    def tracked(**options: Any) -> BaseStore:
        opened.append(make(**options))
        return opened[-1]

    try:
        yield tracked
    finally:
        for s in opened:
            s.close()


@pytest.fixture
def store(open_store: StoreOpener) -> BaseStore:
    return open_store()


@pytest.fixture
def event() -> EventFactory:
    """Builds a plain event; ids are unique unless given."""
    counter = itertools.count(1)

    def make(type: str = "external.alert", *, id: str | None = None, timestamp: float = 1000.0,
             function_name: str = "", correlation_id: str = "", payload: dict | None = None,
             **extra: Any) -> EventRecord:
        return EventRecord(
            id=id or f"evt-{next(counter)}",
            type=type,
            source="test",
            timestamp=timestamp,
            payload=payload or {},
            correlation_id=correlation_id,
            function_name=function_name,
            **extra,
        )

    return make


@pytest.fixture
def enhancement(event: EventFactory) -> EventFactory:
    """Builds an enhancement.completed event for version `number` of a function."""

    def make(function_name: str = "calc", number: int = 1, *, content_hash: str | None = None,
             timestamp: float = 1000.0, **payload: Any) -> EventRecord:
        body = {
            "function_name": function_name,
            "version": f"v{number}",
            "number": number,
            "content_hash": content_hash or f"hash-{function_name}-{number}",
            "parent_version": f"v{number - 1}" if number > 1 else "",
            "original_code": "def calc(x):\n    return x\n",
            "domain": "base_reliability",
            "optimize_for": "reliability",
            "context": {"imports": ["math"], "environment": "test"},
            "dana_source": "",
            "config": {"retries": 3},
            "python_code": f"def calc(x):  # v{number}\n    return x\n",
            "dana_code": "",
            "optimizations": ["retry", "timeout"],
            "safety_level": 0.8,
            "generator": "template",
            "params": {"retries": 3, "timeout": 1.5},
            "status": "active",
        }
        body.update(payload)
        return event("enhancement.completed", function_name=function_name,
                     timestamp=timestamp, payload=body)

    return make


@pytest.fixture
def feedback(event: EventFactory) -> EventFactory:
    """Builds a function.feedback event (seed schema); rating omitted unless given."""

    def make(function_name: str = "calc", version: str = "v1", *, timestamp: float = 1000.0,
             **payload: Any) -> EventRecord:
        body = {
            "function_name": function_name,
            "version": version,
            "execution_id": "exec-1",
            "feedback_type": "user",
            "comments": "",
            "suggestions": [],
        }
        body.update(payload)
        return event("function.feedback", function_name=function_name,
                     timestamp=timestamp, payload=body)

    return make
