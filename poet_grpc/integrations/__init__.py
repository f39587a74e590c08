"""Integrations: outbound sinks (webhook, PagerDuty, Slack, MLflow) and inbound
mappings, all as consumers of the event log.

    integrations = Integrations(db, router, load_sinks(settings.sinks_file))
    integrations.start()            # in the running loop
    ...
    await integrations.stop()
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from poet_grpc.core.db import Database
from poet_grpc.core.errors import FieldViolation, InvalidArgument, NotFound
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.paging import page_size
from poet_grpc.observability.metrics import Metrics

from ._config import KINDS, SinkConfig, SinksFileError, load_sinks
from .inbound import InboundMapper
from .sinks import Sink

__all__ = ["DeadLetter", "Integrations", "KINDS", "SinkConfig", "SinksFileError", "load_sinks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """An event a sink gave up on."""

    id: int
    sink: str
    event_id: str
    event_position: int
    event_type: str
    function_name: str
    attempts: int
    last_error: str
    first_failure_at: float
    last_failure_at: float
    status: str
    """pending or replayed."""

    @classmethod
    def from_row(cls, row: dict) -> "DeadLetter":
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


class Integrations:
    def __init__(self, db: Database, router: EventRouter, sinks: list[SinkConfig], *, checkpoint_seconds: float = 5.0,
                 metrics: Metrics | None = None):
        self._db = db
        self._metrics = metrics or Metrics()
        self._router = router
        self._configs = list(sinks)
        self._checkpoint_seconds = checkpoint_seconds
        self._client: httpx.AsyncClient | None = None
        self.sinks: dict[str, Sink] = {}
        self.inbound = InboundMapper(db, router, checkpoint_seconds=checkpoint_seconds, metrics=self._metrics)
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(follow_redirects=False)
        self._tasks.append(loop.create_task(self.inbound.run(), name="poet-inbound"))
        for config in self._configs:
            sink = Sink(config, self._db, self._router, self._client, checkpoint_seconds=self._checkpoint_seconds,
                        metrics=self._metrics)
            self.sinks[config.name] = sink
            self._tasks.append(loop.create_task(sink.run(), name=f"poet-sink-{config.name}"))
        if self._configs:
            log.info("integrations: sinks %s", ", ".join(f"{c.name} ({c.kind})" for c in self._configs))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001
                log.exception("integration task %s failed", task.get_name())
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def sink(self, name: str) -> Sink:
        try:
            return self.sinks[name]
        except KeyError:
            raise NotFound("sink", name) from None

    async def list_dead_letters(self, sink: str, *, size: int, token: str) -> tuple[list[DeadLetter], str]:
        """One page of dead letters (oldest first) of a sink, or of all sinks when sink is ""."""
        filters = [sink]
        after = self._db.page_tokens.decode(token, filters)
        limit = page_size(size, default=100, maximum=1000)
        rows = await self._db.call(lambda store: store.list_dead_letters(sink, after, limit + 1))
        letters = [DeadLetter.from_row(r) for r in rows]
        if len(letters) > limit:
            return letters[:limit], self._db.page_tokens.encode(letters[limit - 1].id, filters)
        return letters, ""

    async def replay(self, sink: str, *, ids: list[int], replay_all: bool) -> list[DeadLetter]:
        """Deliver dead letters again, in log order: the given ids, or every pending one.
        Each comes back replayed, or still pending with its new error."""
        target = self.sink(sink)
        if ids:
            rows = await self._db.call(lambda store: store.list_dead_letters(sink, 0, len(ids), ids=ids))
            missing = sorted(set(ids) - {r["id"] for r in rows})
            if missing:
                raise NotFound("dead letter", ", ".join(map(str, missing)))
        elif replay_all:
            rows = await self._db.call(lambda store: store.list_dead_letters(sink, 0, 100_000, pending_only=True))
        else:
            raise InvalidArgument([FieldViolation("ids", "give the ids to replay, or all: true")])
        return [DeadLetter.from_row(r) for r in await target.replay(rows)]
