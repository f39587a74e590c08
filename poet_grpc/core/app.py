"""Wires the core's pieces to one store."""

from __future__ import annotations

from dataclasses import dataclass

from poet_grpc import generator
from poet_grpc.config import Settings, learning_policy
from poet_grpc.core.db import Database
from poet_grpc.core.enhancement import EnhancementService
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.feedback import FeedbackService
from poet_grpc.core.learning_loop import LearningLoop
from poet_grpc.core.versions import VersionCatalog


@dataclass
class Core:
    db: Database
    events: EventRouter
    enhancements: EnhancementService
    versions: VersionCatalog
    feedback: FeedbackService
    learning: LearningLoop

    @classmethod
    async def open(cls, settings: Settings) -> "Core":
        """Open the store and start the learning loop."""
        db = await Database.open(settings.db, synchronous=settings.sqlite_synchronous)
        events = EventRouter(db, environment=settings.environment)
        llm = None
        if settings.gemini_api_key:
            llm = generator.GeminiGenerator(
                settings.gemini_api_key,
                model=settings.gemini_model,
                base_url=settings.gemini_base_url or None,
                timeout_seconds=settings.gemini_timeout_seconds,
                gate_timeout_seconds=settings.gate_timeout_seconds,
            )
        enhancements = EnhancementService(events, workers=settings.generator_workers, llm=llm)
        learning = LearningLoop(db, events, enhancements, learning_policy(settings))
        core = cls(
            db=db,
            events=events,
            enhancements=enhancements,
            versions=VersionCatalog(db, events),
            feedback=FeedbackService(events, learning),
            learning=learning,
        )
        learning.start()
        return core

    @staticmethod
    def domains() -> list[generator.DomainInfo]:
        return [generator.DOMAINS[name] for name in sorted(generator.DOMAINS)]

    async def close(self) -> None:
        self.events.close()
        await self.learning.stop()
        self.enhancements.close()
        await self.db.close()
