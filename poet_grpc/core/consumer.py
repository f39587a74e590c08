"""A log consumer with a durable position: the learning loop, the integrations' sinks
and inbound mappings all read the log this way."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from poet_grpc.core.db import Database
from poet_grpc.core.errors import OutOfRange
from poet_grpc.core.event_router import Checkpoint, EventRouter
from poet_grpc.core.models import EventFilter, EventRecord

log = logging.getLogger(__name__)
_SAVE_EVERY = 200


async def consume(db: Database, router: EventRouter, name: str, handle: Callable[[EventRecord], Awaitable[bool]],
                  *, checkpoint_seconds: float = 5.0) -> None:
    """Feed every event after the consumer's saved position to handle, in log order.

    handle returns True when it did something outside the log (e.g. delivered):
    the position is then saved at once, so a restart repeats at most that event.
    Otherwise the position is saved every few hundred events and when caught up.
    An exception in handle is logged and the event skipped.
    """
    saved = position = await db.call(lambda store: store.consumer_position(name))
    while True:
        try:
            async for item in router.subscribe(EventFilter(), after_position=position, checkpoint_seconds=checkpoint_seconds):
                acted = False
                if isinstance(item, Checkpoint):
                    position = item.position
                else:
                    try:
                        acted = await handle(item)
                    except Exception:  # noqa: BLE001 - one bad event must not stop the consumer
                        log.exception("consumer %s failed on event %s (%s)", name, item.id, item.type)
                    position = item.position
                if position > saved and (acted or isinstance(item, Checkpoint) or position - saved >= _SAVE_EVERY):
                    await db.call(lambda store, at=position: store.set_consumer_position(name, at))
                    saved = position
            return  # the router closed
        except OutOfRange:
            log.warning("consumer %s: position %d is older than the log's retention; resuming from the oldest kept event",
                        name, position)
            position = 0
