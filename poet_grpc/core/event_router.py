"""The event log as the rest of the core sees it: append, list, and tail.

Streams are a tail of the log: a subscriber reads everything after its
position straight from the store, in position order, then sleeps until an
append wakes it. Reading from the log (not from an in-memory queue) is what
makes delivery gap-free and ordered, and a slow subscriber costs no memory.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, TypeVar

from poet_grpc.core.db import Database
from poet_grpc.core.models import AppendResult, EventFilter, EventRecord
from poet_grpc.core.paging import decode_token, encode_token, page_size
from poet_grpc.store import Store

T = TypeVar("T")
SCHEMA_VERSION = "1.0"
SERVICE_NAME = "poet"


@dataclass(frozen=True)
class Checkpoint:
    """Where a stream stands: everything up to position has been considered."""

    position: int
    caught_up: bool


class EventRouter:
    def __init__(self, db: Database, *, environment: str, read_batch: int = 500):
        self._db = db
        self._environment = environment
        self._read_batch = read_batch
        self._changed = asyncio.Event()
        self._closed = False

    def new_event(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        source: str,
        function_name: str = "",
        correlation_id: str = "",
        causation_id: str = "",
    ) -> EventRecord:
        """An event stamped with a fresh id, the current time and this service's metadata."""
        return EventRecord(
            id=str(uuid.uuid4()),
            type=type,
            source=source,
            timestamp=time.time(),
            payload=payload,
            correlation_id=correlation_id,
            causation_id=causation_id,
            metadata=self.metadata(),
            function_name=function_name or str(payload.get("function_name", "")),
        )

    def metadata(self) -> dict[str, str]:
        return {"version": SCHEMA_VERSION, "service": SERVICE_NAME, "environment": self._environment}

    async def commit(self, transaction: Callable[[Store], T]) -> T:
        """Run a store transaction that may append events, then wake the streams."""
        try:
            return await self._db.call(transaction)
        finally:
            self._notify()

    async def append(self, events: list[EventRecord]) -> list[AppendResult]:
        """Append a batch atomically; duplicates by id are reported, not appended."""
        return await self.commit(lambda store: store.append_events(events))

    async def list_events(self, flt: EventFilter, *, size: int, token: str) -> tuple[list[EventRecord], str]:
        """One page of events in log order, and the token of the next page ("" on the last)."""
        filters = [flt.function_name, flt.event_type, flt.correlation_id, flt.start_time, flt.end_time]
        after = decode_token(token, filters)
        limit = page_size(size, default=100, maximum=1000)
        events, _ = await self._db.call(lambda store: store.read_events(after, flt, limit + 1))
        if len(events) > limit:
            return events[:limit], encode_token(events[limit - 1].position, filters)
        return events, ""

    async def subscribe(
        self, flt: EventFilter, *, after_position: int = 0, live_only: bool = False, checkpoint_seconds: float = 10.0
    ) -> AsyncIterator[EventRecord | Checkpoint]:
        """Every matching event after the position, backlog first, then live ones.

        Yields a caught-up Checkpoint when the backlog is exhausted and another
        every checkpoint_seconds while idle. Ends when the router closes.
        """
        position = after_position
        if live_only:
            position = await self._db.call(lambda store: store.last_position())
        announced = False
        while not self._closed:
            changed = self._changed  # taken before reading, so no append is missed
            events, considered = await self._db.call(
                lambda store: store.read_events(position, flt, self._read_batch)
            )
            for event in events:
                yield event
            if events:
                position = events[-1].position
            if len(events) == self._read_batch:
                continue  # more backlog to read
            position = max(position, considered)
            if not announced:
                announced = True
                yield Checkpoint(position, caught_up=True)
            try:
                await asyncio.wait_for(changed.wait(), checkpoint_seconds)
            except TimeoutError:
                yield Checkpoint(position, caught_up=True)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
