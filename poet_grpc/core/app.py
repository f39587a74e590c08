"""Wires the core's pieces to one store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poet_grpc import generator
from poet_grpc.core.db import Database
from poet_grpc.core.enhancement import EnhancementService, VersionCatalog
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.feedback import FeedbackService


@dataclass
class Core:
    db: Database
    events: EventRouter
    enhancements: EnhancementService
    versions: VersionCatalog
    feedback: FeedbackService

    @classmethod
    async def open(
        cls, db_path: Path, *, synchronous: str = "FULL", environment: str = "dev", generator_workers: int = 4
    ) -> "Core":
        db = await Database.open(db_path, synchronous=synchronous)
        events = EventRouter(db, environment=environment)
        return cls(
            db=db,
            events=events,
            enhancements=EnhancementService(events, workers=generator_workers),
            versions=VersionCatalog(db),
            feedback=FeedbackService(events),
        )

    @staticmethod
    def domains() -> list[generator.DomainInfo]:
        return [generator.DOMAINS[name] for name in sorted(generator.DOMAINS)]

    async def close(self) -> None:
        self.events.close()
        self.enhancements.close()
        await self.db.close()
