"""The event log as the rest of the core sees it: append, list, and tail.

Appends go through the database's group commit: concurrent callers share one
transaction and one fsync, and each is answered after the commit holding its
events. Streams are a tail of the log: a subscriber first reads its backlog from
the store, then is fed from an in-memory tail (a bounded list of the events this
process committed most recently, in position order), so a hundred subscribers
cost no SQLite reads. A subscriber that falls behind the tail (slow, or far
back) reads the log again until it catches up: no per-subscriber queue, so a
slow subscriber costs no memory and loses nothing.

Replicas (PostgreSQL): other processes append to the same log. A router that
follows it (follow(), when the database has log_changes) extends its tail only
from the log itself, in position order: a follower task, woken by the database's
notifications, reads what others appended and adds it, and this process's own
commits are added directly only when they continue the tail. Every replica's tail
is therefore the same run of the one global log, and a subscriber waits at the
tail's end for the follower instead of reading the log itself. The log's order
makes this safe: commits are serialised in position order (store/_postgres.py),
so a read never sees a position while an earlier one is still to appear.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, TypeVar

from poet_grpc.core.db import Database
from poet_grpc.core.errors import OutOfRange, Unavailable
from poet_grpc.core.models import AppendResult, EventFilter, EventRecord
from poet_grpc.core.paging import page_size
from poet_grpc.core.principal import principal_metadata
from poet_grpc.observability import tracing
from poet_grpc.observability.metrics import Metrics
from poet_grpc.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
SCHEMA_VERSION = "1.0"
SERVICE_NAME = "poet"
TAIL_EVENTS = 10_000
"""Recent events kept in memory for live subscribers (between this and twice it)..."""
TAIL_BYTES = 32 * 1024 * 1024
"""... and at most about twice this many bytes of them (as stored)."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a stream stands: everything up to position has been considered."""

    position: int
    caught_up: bool


def matcher(flt: EventFilter) -> Callable[[EventRecord], bool]:
    """The filter as a predicate, the same as the store's query (type patterns:
    a trailing "*" matches any rest, so "drift.*" is every drift.<x> type)."""
    checks: list[Callable[[EventRecord], bool]] = []
    if flt.function_name:
        checks.append(lambda e, v=flt.function_name: e.function_name == v)
    if flt.correlation_id:
        checks.append(lambda e, v=flt.correlation_id: e.correlation_id == v)
    if flt.event_type.endswith("*"):
        checks.append(lambda e, v=flt.event_type[:-1]: e.type.startswith(v))
    elif flt.event_type:
        checks.append(lambda e, v=flt.event_type: e.type == v)
    if flt.start_time is not None:
        checks.append(lambda e, v=float(flt.start_time): e.timestamp >= v)
    if flt.end_time is not None:
        checks.append(lambda e, v=float(flt.end_time): e.timestamp < v)
    if not checks:
        return lambda e: True
    if len(checks) == 1:
        return checks[0]
    return lambda e: all(check(e) for check in checks)


def _expired(position: int, start: int) -> OutOfRange:
    return OutOfRange(
        f"position {position} is older than the log's retention; the earliest event still "
        f"logged is at position {start}: resume from after_position {start - 1} (or 0)",
        reason="POSITION_EXPIRED",
        metadata={"earliest_position": str(start), "resume_after_position": str(start - 1),
                  "requested_position": str(position)},
    )


def _beyond_end(position: int, last: int) -> OutOfRange:
    return OutOfRange(
        f"position {position} is beyond the end of the log (its last position is {last}): resume from "
        f"an after_position the log has reached, or 0 for the whole log",
        reason="POSITION_BEYOND_END",
        metadata={"last_position": str(last), "requested_position": str(position)},
    )


class EventRouter:
    def __init__(self, db: Database, *, environment: str, read_batch: int = 500, tail_events: int = TAIL_EVENTS,
                 tail_bytes: int = TAIL_BYTES, metrics: Metrics | None = None):
        self._db = db
        self._metrics = metrics or Metrics()
        self._environment = environment
        self._read_batch = read_batch
        self._tail_events = tail_events
        self._tail_bytes_limit = tail_bytes
        self._tail_sizes: list[int] = []
        self._tail_bytes = 0
        self._changed = asyncio.Event()
        self._closed = False
        self._started = False
        self._tail: list[EventRecord] = []
        self._tail_first = 1
        """Position of self._tail[0]."""
        self._last = 0
        """The last committed position this process knows of."""
        self._log_start = 1
        """The first position retention has kept (as far as this process knows)."""
        self._behind = asyncio.Event()
        """Set when the log may hold events past the tail (for the follower)."""
        self._following: list[asyncio.Task] = []
        db.on_commit(self._on_commit)
        self._metrics.watch_log(lambda: (self._log_start, self._last))

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
        return {"version": SCHEMA_VERSION, "service": SERVICE_NAME, "environment": self._environment,
                **principal_metadata(), **tracing.event_metadata()}

    async def commit(self, transaction: Callable[[Store], T]) -> T:
        """Run a store transaction that may read and append events, atomically;
        returns once it is committed (group-committed with concurrent ones).
        It runs in the caller's context, so events it makes record the caller's principal
        and trace (that of this commit's span)."""
        with tracing.span("poet.store.commit"):
            context = contextvars.copy_context()
            began = time.perf_counter()
            try:
                return await self._db.write(lambda store: context.run(transaction, store))
            finally:
                self._metrics.append_duration.observe(time.perf_counter() - began)

    async def append(self, events: list[EventRecord]) -> list[AppendResult]:
        """Append a batch atomically; duplicates by id are reported, not appended."""
        return await self.commit(lambda store: store.append_events(events))

    async def list_events(self, flt: EventFilter, *, size: int, token: str) -> tuple[list[EventRecord], str]:
        """One page of events in log order, and the token of the next page ("" on the last)."""
        filters = [flt.function_name, flt.event_type, flt.correlation_id, flt.start_time, flt.end_time]
        after = self._db.page_tokens.decode(token, filters)
        limit = page_size(size, default=100, maximum=1000)
        events, _, start = await self._db.call(
            lambda store: (*store.read_events(after, flt, limit + 1), store.log_start())
        )
        if after and after + 1 < start:
            raise _expired(after, start)
        if len(events) > limit:
            return events[:limit], self._db.page_tokens.encode(events[limit - 1].position, filters)
        return events, ""

    async def start(self) -> None:
        """Learn where the log ends (once; subscribe does it when needed)."""
        if self._started:
            return
        last, log_start = await self._db.call(lambda store: (store.last_position(), store.log_start()))
        if not self._started:
            self._started = True
            self._log_start = max(self._log_start, log_start)
            self._last = max(self._last, last)
            if not self._tail:
                self._tail_first = self._last + 1

    def follow(self) -> None:
        """Follow other processes' appends (when the database has log_changes): the
        tail then grows from the log in position order (see the module's docstring)."""
        changes = self._db.log_changes
        if changes is None or self._following:
            return
        loop = asyncio.get_running_loop()
        self._following = [loop.create_task(self._hear(changes.wakeups), name="poet-log-wakeups"),
                           loop.create_task(self._follow(changes.reader), name="poet-log-follower")]

    async def _hear(self, wakeups) -> None:
        while not self._closed:
            try:
                async for last in wakeups():
                    # None: unknown, look. A position the tail has reached (this
                    # process's own commit, usually) needs no read.
                    if last is None or last >= self._tail_first + len(self._tail):
                        self._behind.set()
            except Exception:  # noqa: BLE001 - listen again; the follower polls meanwhile
                log.exception("listening for other processes' appends failed")
                self._behind.set()
                await asyncio.sleep(1.0)

    async def _follow(self, reader: Database) -> None:
        """Add what the log holds past the tail to the tail, whenever woken."""
        await self.start()
        failures = 0
        while not self._closed:
            await self._behind.wait()
            self._behind.clear()
            try:
                while True:
                    after = self._tail_first + len(self._tail) - 1
                    found, considered = await reader.call(
                        lambda store, at=after: store.read_log(at, self._read_batch))
                    if found:
                        self._extend_tail([event for event, _ in found], [size for _, size in found])
                    if found or considered > self._last:
                        self._last = max(self._last, considered)
                        self._notify()
                    if len(found) < self._read_batch:
                        break
                failures = 0
            except Exception as exc:  # noqa: BLE001 - e.g. the database is unreachable: try again
                failures += 1
                log.warning("following the log failed (%s); retrying", exc)
                self._behind.set()
                await asyncio.sleep(min(5.0, 0.25 * 2 ** min(failures, 5)))

    async def subscribe(
        self, flt: EventFilter, *, after_position: int = 0, live_only: bool = False, checkpoint_seconds: float = 10.0
    ) -> AsyncIterator[EventRecord | Checkpoint]:
        """Every matching event after the position, one at a time: subscribe_batches, flattened."""
        async for item in self.subscribe_batches(
            flt, after_position=after_position, live_only=live_only, checkpoint_seconds=checkpoint_seconds
        ):
            if isinstance(item, Checkpoint):
                yield item
            else:
                for event in item:
                    yield event

    async def subscribe_batches(
        self, flt: EventFilter, *, after_position: int = 0, live_only: bool = False, checkpoint_seconds: float = 10.0,
        max_batch: int = 0,
    ) -> AsyncIterator[list[EventRecord] | Checkpoint]:
        """Every matching event after the position, backlog first, then live ones,
        in lists (never empty) of up to max_batch events (0: up to read_batch) in log order.

        Yields a caught-up Checkpoint when the backlog is exhausted, and another
        every checkpoint_seconds (while idle, or while only non-matching events
        pass). Ends when the router closes. OutOfRange if after_position is older
        than the log's retention (0 always means: from the start of what is kept),
        or beyond the log's last position (the events up to it would pass unseen).
        """
        await self.start()
        if after_position > self._last:
            # Ask the store too: another process may have appended up to it.
            last = await self._db.call(lambda store: store.last_position())
            self._last = max(self._last, last)
            if after_position > self._last:
                raise _beyond_end(after_position, self._last)
        position = after_position
        if self._following and not live_only:
            # Others may have appended what this process has not heard of yet: learn
            # the log's end now, so the stream is not told it caught up before it.
            last = await self._db.call(lambda store: store.last_position())
            if last > self._last:
                self._last = last
                self._behind.set()
        if live_only:
            position = max(self._last, await self._db.call(lambda store: store.last_position()))
        match = matcher(flt)
        announced = False
        checkpointed = time.monotonic()
        while not self._closed:
            changed = self._changed  # taken before reading, so no append is missed
            if position + 1 < self._log_start:
                if position or after_position:
                    raise _expired(position, self._log_start)
                position = self._log_start - 1  # 0: from the start of what is kept
            index = position + 1 - self._tail_first
            if position < self._last and not (self._following and index >= len(self._tail)):
                if 0 <= index < len(self._tail):
                    # Live: from the in-memory tail (shared by every subscriber).
                    chunk = self._tail[index:index + self._read_batch]
                    position = chunk[-1].position
                    events = [event for event in chunk if match(event)]
                else:
                    # Behind the tail: read the log.
                    events, considered, start = await self._read_while_open(
                        lambda store, at=position: (*store.read_events(at, flt, self._read_batch), store.log_start())
                    )
                    if position and position + 1 < start:
                        raise _expired(position, start)
                    position = events[-1].position if len(events) == self._read_batch else max(position, considered)
                    self._last = max(self._last, considered)
                step = max_batch or max(1, len(events))
                for start in range(0, len(events), step):
                    yield events[start:start + step]
                if time.monotonic() - checkpointed >= checkpoint_seconds:
                    checkpointed = time.monotonic()
                    yield Checkpoint(position, caught_up=position >= self._last)
                continue
            if not announced and position >= self._last:
                announced = True
                checkpointed = time.monotonic()
                yield Checkpoint(position, caught_up=True)
            try:
                async with asyncio.timeout(checkpoint_seconds):  # a timer, not a task per wait
                    await changed.wait()
            except TimeoutError:
                # Idle: also look at the store, in case something was appended
                # outside the group commit (it is then read from the log; when
                # following, the follower adds it to the tail).
                last = await self._read_while_open(lambda store: store.last_position())
                if last > self._last:
                    self._last = last
                    self._behind.set()
                if position >= self._last:
                    checkpointed = time.monotonic()
                    yield Checkpoint(position, caught_up=True)

    async def _read_while_open(self, read: Callable[[Store], T]) -> T:
        """read on the store for a stream that has begun: while the database is away
        (Unavailable) the stream waits for it, sending nothing, rather than ending."""
        while True:
            try:
                return await self._db.call(read)
            except Unavailable as exc:
                if self._closed:
                    raise
                await asyncio.sleep(min(exc.retry_after, 1.0))

    def close(self) -> None:
        """End every stream (at shutdown), and stop following the log."""
        self._closed = True
        for task in self._following:
            task.cancel()
        self._notify()

    def forget_before(self, log_start: int) -> None:
        """Retention deleted every position before log_start: drop them from the tail."""
        self._log_start = max(self._log_start, log_start)
        self._drop_tail(min(len(self._tail), self._log_start - self._tail_first))

    def _drop_tail(self, drop: int) -> None:
        if drop > 0:
            self._tail_bytes -= sum(self._tail_sizes[:drop])
            del self._tail[:drop]
            del self._tail_sizes[:drop]
            self._tail_first += drop

    def _on_commit(self, events: list[EventRecord], sizes: list[int]) -> None:
        """A group committed these events (in position order): extend the tail."""
        self._metrics.events_appended.inc(len(events))
        if self._following:
            # Only a continuation of the tail is added here; anything else (another
            # replica appended in between) the follower reads from the log.
            self._extend_tail(events, sizes)
            if events[-1].position > self._last:
                self._last = events[-1].position
                self._behind.set()
            self._notify()
            return
        first = events[0].position
        if first != self._tail_first + len(self._tail):
            # Not contiguous with the tail (e.g. before start()): begin a new tail;
            # subscribers behind it read the log.
            self._tail, self._tail_sizes, self._tail_bytes = [], [], 0
            self._tail_first = first
        self._add_to_tail(events, sizes)
        self._last = max(self._last, events[-1].position)
        self._notify()

    def _extend_tail(self, events: list[EventRecord], sizes: list[int]) -> None:
        """Add the events that continue the tail (the log's next positions, in order);
        those already in it are passed over, and nothing is added past a gap."""
        end = self._tail_first + len(self._tail) - 1
        skip = 0
        while skip < len(events) and events[skip].position <= end:
            skip += 1
        if skip == len(events):
            return
        if events[skip].position != end + 1 and self._tail:
            return  # not a continuation: left for the follower
        if not self._tail:
            self._tail_first = events[skip].position
        self._add_to_tail(events[skip:], sizes[skip:])
        self._last = max(self._last, events[-1].position)

    def _add_to_tail(self, events: list[EventRecord], sizes: list[int]) -> None:
        self._tail.extend(events)
        self._tail_sizes.extend(sizes)
        self._tail_bytes += sum(sizes)
        if len(self._tail) > 2 * self._tail_events or self._tail_bytes > 2 * self._tail_bytes_limit:
            # Trim back to the limits (amortised: once per limit's worth of events).
            drop, kept_bytes = 0, self._tail_bytes
            while drop < len(self._tail) - 1 and (
                len(self._tail) - drop > self._tail_events or kept_bytes > self._tail_bytes_limit
            ):
                kept_bytes -= self._tail_sizes[drop]
                drop += 1
            self._drop_tail(drop)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class Retention:
    """Background job: trims events appended more than `days` ago (not by their
    claimed timestamp) from the start of the log, in small batches, every
    `interval` seconds."""

    def __init__(self, db: Database, *, days: float, interval: float = 60.0, batch: int = 1000,
                 on_trim: Callable[[int], None] | None = None):
        self._db = db
        self._on_trim = on_trim
        self._days = days
        self._interval = interval
        self._batch = batch
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._days > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="poet-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run_once(self, now: float | None = None) -> int:
        """Trim everything expired now; returns how many events were deleted."""
        cutoff = (time.time() if now is None else now) - self._days * 86400
        total = 0
        while True:
            deleted, start = await self._db.write(
                lambda store: (store.trim_log(cutoff, self._batch), store.log_start())
            )
            total += deleted
            if deleted and self._on_trim is not None:
                self._on_trim(start)
            if deleted < self._batch:
                return total
            await asyncio.sleep(0)  # let other writes in between batches

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                deleted = await self.run_once()
                if deleted:
                    log.info("retention: deleted %d events older than %g days", deleted, self._days)
            except Exception:  # noqa: BLE001 - try again next time
                log.exception("retention job failed")
