"""Wires the core's pieces to one store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from poet_grpc import generator
from poet_grpc.config import Settings, generator_limits, is_postgres_url, learning_policy, quotas
from poet_grpc.core.db import Database
from poet_grpc.core.enhancement import EnhancementService
from poet_grpc.core.event_router import EventRouter, Retention
from poet_grpc.core.feedback import FeedbackService
from poet_grpc.core.learning_loop import LearningLoop
from poet_grpc.core.versions import VersionCatalog
from poet_grpc.integrations import Integrations, load_sinks
from poet_grpc.observability.metrics import Metrics


@dataclass
class Core:
    db: Database
    events: EventRouter
    enhancements: EnhancementService
    versions: VersionCatalog
    feedback: FeedbackService
    learning: LearningLoop
    integrations: Integrations
    sandbox: generator.GateSandbox
    metrics: Metrics
    """This server's metrics (GET /metrics renders metrics.exposition())."""
    retention: Retention | None = None

    @classmethod
    async def open(cls, settings: Settings) -> "Core":
        """Open the store and start the learning loop and the integrations."""
        sinks = load_sinks(settings.sinks_file)  # a bad sinks file stops startup here
        # No confinement, no service: SandboxUnavailable stops startup here too.
        sandbox = await asyncio.to_thread(
            generator.gate_sandbox,
            isolation=settings.sandbox,
            workers=settings.generator_workers,
            timeout_seconds=settings.gate_timeout_seconds,
        )
        db = await Database.open(settings.db, synchronous=settings.sqlite_synchronous)
        metrics = Metrics()
        if not is_postgres_url(settings.db):
            metrics.watch_store_file(settings.db)
        events = EventRouter(db, environment=settings.environment, metrics=metrics)
        llm = None
        if settings.gemini_api_key:
            llm = generator.GeminiGenerator(
                settings.gemini_api_key,
                model=settings.gemini_model,
                base_url=settings.gemini_base_url or None,
                timeout_seconds=settings.gemini_timeout_seconds,
                metrics=metrics,
            )
            metrics.watch_llm_breaker(lambda: llm.breaker_state)
        enhancements = EnhancementService(
            events, workers=settings.generator_workers, llm=llm, sandbox=sandbox, quotas=quotas(settings),
            limits=generator_limits(settings), metrics=metrics,
        )
        learning = LearningLoop(db, events, enhancements, learning_policy(settings), metrics=metrics)
        core = cls(
            db=db,
            events=events,
            enhancements=enhancements,
            versions=VersionCatalog(db, events),
            feedback=FeedbackService(events, learning),
            learning=learning,
            integrations=Integrations(db, events, sinks, metrics=metrics),
            sandbox=sandbox,
            metrics=metrics,
        )
        await events.start()
        events.follow()  # other replicas' appends (PostgreSQL); nothing on SQLite
        learning.start()
        core.integrations.start()
        core.retention = Retention(
            db, days=settings.retention_days, interval=settings.retention_check_seconds, on_trim=events.forget_before
        )
        core.retention.start()
        return core

    @staticmethod
    def domains() -> list[generator.DomainInfo]:
        return [generator.DOMAINS[name] for name in sorted(generator.DOMAINS)]

    async def close(self) -> None:
        self.events.close()
        if self.retention is not None:
            await self.retention.stop()
        await self.learning.stop()
        await self.integrations.stop()
        self.enhancements.close()
        await self.db.close()
