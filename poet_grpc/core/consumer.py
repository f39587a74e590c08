"""A log consumer with a durable position: the learning loop, the integrations' sinks
and inbound mappings all read the log this way.

A consumer runs on one process of its database at a time: it first takes the
database's lease of its name (at once on SQLite; on PostgreSQL, when no other
replica holds it). When the lease is lost (its session failed) the consumer stops
and waits to hold it again; whoever holds it next resumes from the durable position."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from poet_grpc.core.db import Database
from poet_grpc.core.errors import OutOfRange
from poet_grpc.core.event_router import Checkpoint, EventRouter
from poet_grpc.core.models import EventFilter, EventRecord
from poet_grpc.observability.metrics import Metrics

log = logging.getLogger(__name__)
SAVE_SECONDS = 1.0
"""How often a consumer that did nothing outside the log saves its position."""


async def consume(db: Database, router: EventRouter, name: str, handle: Callable[[EventRecord], Awaitable[bool]],
                  *, checkpoint_seconds: float = 5.0, wants: Callable[[EventRecord], bool] | None = None,
                  after_batch: Callable[[], Awaitable[None]] | None = None, metrics: Metrics | None = None) -> None:
    """_consume (below) while holding the lease of name; again each time the lease is
    regained, and after a failure (e.g. the database unreachable), with backoff."""
    failures = 0
    while True:
        lost = await db.leases.acquire(name)
        if metrics is not None:
            metrics.consumer_lease(name, True)
        run = asyncio.ensure_future(_consume(db, router, name, handle, checkpoint_seconds=checkpoint_seconds,
                                             wants=wants, after_batch=after_batch, metrics=metrics))
        watch = asyncio.ensure_future(lost.wait())
        started = time.monotonic()
        failure: Exception | None = None
        try:
            await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not run.done():
                run.cancel()
            try:
                await run
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - reported below, then tried again
                failure = exc
            finally:
                if metrics is not None:
                    metrics.consumer_lease(name, False)
                if not lost.is_set():
                    await asyncio.shield(db.leases.release(name))
        if failure is not None:
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            delay = min(30.0, 0.5 * 2 ** min(failures, 6))
            log.warning("consumer %s stopped (%s); starting again in %.1f s", name, failure, delay)
            await asyncio.sleep(delay)
        elif lost.is_set():
            log.warning("consumer %s: lease lost; stopped until it is held again", name)
        else:
            return  # the router closed


async def _consume(db: Database, router: EventRouter, name: str, handle: Callable[[EventRecord], Awaitable[bool]],
                   *, checkpoint_seconds: float, wants: Callable[[EventRecord], bool] | None,
                   after_batch: Callable[[], Awaitable[None]] | None, metrics: Metrics | None) -> None:
    """Feed every event after the consumer's saved position to handle, in log order
    (only those `wants` accepts, when given: the others are passed over cheaply).
    after_batch, when given, runs after each batch of events (before the position
    passes them), for work that is cheaper once per batch than once per event.

    handle returns True when it did something outside the log (e.g. delivered):
    the position is then saved at once, so a restart repeats at most that event.
    Otherwise the position is saved about once a second and when caught up: a
    restart may hand handle a second's worth of events again, so handle must be
    idempotent for events it only records in the log. Saves wait behind group
    commits, so saving per event would hold the consumer back under load.
    An exception in handle is logged and the event skipped.
    metrics, when given, learns each saved position (the consumer's lag is read from it).
    """
    saved = position = await db.call(lambda store: store.consumer_position(name))
    saved_at = time.monotonic()
    if metrics is not None:
        metrics.consumer_position(name, saved)

    async def save(at: int) -> None:
        nonlocal saved, saved_at
        await db.call(lambda store: store.set_consumer_position(name, at))
        saved, saved_at = at, time.monotonic()
        if metrics is not None:
            metrics.consumer_position(name, at)

    while True:
        try:
            async for item in router.subscribe_batches(EventFilter(), after_position=position,
                                                       checkpoint_seconds=checkpoint_seconds):
                if isinstance(item, Checkpoint):
                    position = item.position
                    if position > saved:
                        await save(position)
                    continue
                for event in item:
                    acted = False
                    if wants is None or wants(event):
                        try:
                            acted = await handle(event)
                        except Exception:  # noqa: BLE001 - one bad event must not stop the consumer
                            log.exception("consumer %s failed on event %s (%s)", name, event.id, event.type)
                    position = event.position
                    if acted:
                        await save(position)
                if after_batch is not None:
                    try:
                        await after_batch()
                    except Exception:  # noqa: BLE001 - as for handle
                        log.exception("consumer %s failed after a batch", name)
                if position > saved and time.monotonic() - saved_at >= SAVE_SECONDS:
                    await save(position)
            return  # the router closed
        except OutOfRange:
            log.warning("consumer %s: position %d is older than the log's retention; resuming from the oldest kept event",
                        name, position)
            position = 0
