"""An outbound sink: a log consumer that POSTs matching events to one receiver.

It tails the log from its durable position (consumer "sink:<name>") and delivers
matching events strictly in log order: a failing event is retried (exponential
backoff with jitter, Retry-After honoured) before any later event is sent, so
events of one function are never reordered. When an event cannot be delivered
(max_attempts spent, a 4xx other than 408/429, or nothing to send) it is written
to the dead-letter table and the sink moves on. The position is saved after each
delivered event, so a crash re-sends at most the event in flight: at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx

from poet_grpc.core.db import Database
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.models import EventRecord
from poet_grpc.observability.metrics import Metrics

from ._config import SinkConfig
from poet_grpc.core.consumer import consume
from .delivery import CircuitBreaker, backoff, post
from .formatters import FORMATTERS, PermanentError, dedup_key

log = logging.getLogger(__name__)

SOURCE = "poet.integrations"
ALERT_CREATED = "alert.created_external"
_DERIVED = uuid.UUID("0b6f7c1e-3d0a-4a59-8d56-5f6b0f3f2c41")


@dataclass(frozen=True)
class Delivery:
    """How delivering one event went."""

    ok: bool
    attempts: int
    error: str = ""
    first_failure_at: float | None = None
    last_failure_at: float | None = None


class Sink:
    def __init__(self, config: SinkConfig, db: Database, router: EventRouter, client: httpx.AsyncClient,
                 *, checkpoint_seconds: float = 5.0, metrics: Metrics | None = None):
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset_seconds)
        self._metrics = metrics or Metrics()
        self._counts = self._metrics.sink(config.name, lambda: self.breaker.state)
        self._db = db
        self._router = router
        self._client = client
        self._checkpoint_seconds = checkpoint_seconds
        self._lock = asyncio.Lock()  # one delivery at a time: the worker's or a replay's

    @property
    def consumer(self) -> str:
        return f"sink:{self.config.name}"

    def wants(self, event: EventRecord) -> bool:
        if self.config.kind == "pagerduty" and event.type == ALERT_CREATED:
            return False  # our own confirmation: never page for it (no loop)
        return self.config.wants(event.type)

    # -- the consumer ------------------------------------------------------

    async def run(self) -> None:
        await consume(self._db, self._router, self.consumer, self._handle, checkpoint_seconds=self._checkpoint_seconds,
                      wants=self.wants, metrics=self._metrics)

    async def _handle(self, event: EventRecord) -> bool:
        if not self.wants(event):
            return False
        await self.deliver_or_dead_letter(event)
        return True

    async def deliver_or_dead_letter(self, event: EventRecord) -> Delivery:
        result = await self.deliver(event)
        if not result.ok:
            self._counts.dead_lettered.inc()
            now = time.time()
            log.warning("sink %s: event %s (%s) dead-lettered after %d attempt(s): %s",
                        self.config.name, event.id, event.type, result.attempts, result.error)
            await self._db.call(lambda store: store.add_dead_letter(
                self.config.name, event, attempts=result.attempts, error=result.error,
                first_failure_at=result.first_failure_at or now, last_failure_at=result.last_failure_at or now))
        return result

    # -- one event ---------------------------------------------------------

    async def deliver(self, event: EventRecord) -> Delivery:
        """Send the event, retrying as configured; never raises for receiver failures."""
        async with self._lock:
            try:
                requests = FORMATTERS[self.config.kind](self.config, event)
            except PermanentError as exc:
                return Delivery(False, 0, str(exc))
            cfg = self.config
            attempts = 0
            first = last = None
            body: Any = None
            index = 0
            while index < len(requests):
                await self.breaker.ready()
                attempts += 1
                outcome = await post(self._client, cfg, requests[index])
                if outcome.ok:
                    self.breaker.success()
                    body = outcome.body
                    index += 1
                    continue
                last = time.time()
                first = first or last
                if outcome.retryable:
                    self.breaker.failure()
                    self._counts.failed_retryable.inc()
                else:
                    self._counts.failed_final.inc()
                failures = attempts - index
                if not outcome.retryable or failures >= cfg.max_attempts:
                    return Delivery(False, attempts, outcome.error, first, last)
                self._counts.retried.inc()
                await asyncio.sleep(backoff(cfg, failures, outcome.retry_after))
            self._counts.delivered.inc()
            await self._after_delivery(event, body)
            return Delivery(True, attempts, "", first, last)

    async def _after_delivery(self, event: EventRecord, response: Any) -> None:
        if self.config.kind != "pagerduty":
            return
        # seed 002 PagerDutyIntegration: confirm the external alert in the log.
        external_id = response.get("dedup_key") if isinstance(response, dict) else None
        confirmation = self._router.new_event(
            ALERT_CREATED,
            {
                "external_id": external_id or dedup_key(event),
                "poet_execution_id": event.payload.get("execution_id", ""),
                "system": "pagerduty",
                "sink": self.config.name,
            },
            source=SOURCE,
            function_name=event.function_name,
            correlation_id=event.correlation_id,
            causation_id=event.id,
        )
        event_id = str(uuid.uuid5(_DERIVED, f"{event.id}/{ALERT_CREATED}/{self.config.name}"))
        await self._router.append([replace(confirmation, id=event_id)])

    # -- dead letters --------------------------------------------------------

    async def replay(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Deliver the dead letters again in log order; each ends replayed or stays pending."""
        updated = []
        for row in sorted(rows, key=lambda r: (r["event_position"], r["id"])):
            event = await self._db.call(lambda store, event_id=row["event_id"]: store.get_event(event_id))
            if event is None:
                result = Delivery(False, 0, "the event is no longer in the log", time.time(), time.time())
            else:
                result = await self.deliver(event)
            status = "replayed" if result.ok else "pending"
            change = dict(status=status, attempts=row["attempts"] + result.attempts, error=result.error or row["last_error"],
                          failed_at=result.last_failure_at)
            await self._db.call(lambda store, i=row["id"], c=change: store.update_dead_letter(i, **c))
            updated.append(row | {"status": status, "attempts": change["attempts"], "last_error": change["error"],
                                  "last_failure_at": result.last_failure_at or row["last_failure_at"]})
        return updated
