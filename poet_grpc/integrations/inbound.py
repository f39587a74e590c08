"""Inbound mappings (seed 002 AitomaticEventIntegration): events that external
systems publish are turned into POET's own events.

- external.pagerduty.resolved -> feedback.alert_resolved
- external.mlflow.experiment_tagged -> feedback.mlflow_validation
- transpilation.completed as the agent sends it ({function_name, dana_source,
  python_output, duration}) -> transpilation.completed normalised
  ({..., transpilation_time_ms}, source aitomatic.transpilation_agent). Agents
  may also publish it as external.aitomatic.transpilation_completed.

A log consumer with a durable position (consumer "inbound"); a mapped event's id
is derived from its trigger, so replaying the log after a restart appends
nothing twice. No loop: the normalised transpilation.completed always carries
transpilation_time_ms, and only events without it are mapped.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from poet_grpc.core.db import Database
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.models import EventRecord
from poet_grpc.observability.metrics import Metrics

from poet_grpc.core.consumer import consume

CONSUMER = "inbound"
_DERIVED = uuid.UUID("a3c2f0f4-6a77-4f0e-9a63-1c1f9b8e2d55")
PAGERDUTY_RESOLVED = "external.pagerduty.resolved"
MLFLOW_TAGGED = "external.mlflow.experiment_tagged"
TRANSPILATION_COMPLETED = "transpilation.completed"
AITOMATIC_TRANSPILATION = "external.aitomatic.transpilation_completed"
_MAPPED = frozenset({PAGERDUTY_RESOLVED, MLFLOW_TAGGED, TRANSPILATION_COMPLETED, AITOMATIC_TRANSPILATION})


def derived_id(trigger: EventRecord, event_type: str) -> str:
    """The id of the event of this type mapped from trigger: the same on every replay."""
    return str(uuid.uuid5(_DERIVED, f"{trigger.id}/{event_type}"))


class InboundMapper:
    def __init__(self, db: Database, router: EventRouter, *, checkpoint_seconds: float = 5.0,
                 metrics: Metrics | None = None):
        self._db = db
        self._router = router
        self._checkpoint_seconds = checkpoint_seconds
        self._metrics = metrics

    async def run(self) -> None:
        await consume(self._db, self._router, CONSUMER, self._handle, checkpoint_seconds=self._checkpoint_seconds,
                      wants=lambda event: event.type in _MAPPED, metrics=self._metrics)

    async def _handle(self, event: EventRecord) -> bool:
        mapped = await self.map(event)
        if mapped is not None:
            await self._router.append([mapped])
        return False  # mapped ids are derived: a replay appends nothing twice

    async def map(self, event: EventRecord) -> EventRecord | None:
        """The POET event an inbound event maps to, or None."""
        if event.type == PAGERDUTY_RESOLVED:
            return await self._alert_resolved(event)
        if event.type == MLFLOW_TAGGED:
            return await self._mlflow_validation(event)
        if event.type == AITOMATIC_TRANSPILATION or (
            event.type == TRANSPILATION_COMPLETED and "transpilation_time_ms" not in event.payload
        ):
            return self._transpilation(event)
        return None

    async def _function_of(self, execution_id: str, correlation_id: str) -> str:
        target = await self._db.call(lambda store: store.execution_target(execution_id, correlation_id))
        return target[0] if target else ""

    async def _alert_resolved(self, event: EventRecord) -> EventRecord | None:
        data = event.payload
        execution_id = str(data.get("poet_execution_id") or "")
        if not execution_id:
            return None
        correlation_id = str(data.get("correlation_id") or event.correlation_id)
        resolution = str(data.get("resolution") or "")
        mapped = self._router.new_event(
            "feedback.alert_resolved",
            {
                "execution_id": execution_id,
                "resolution_type": resolution,
                "resolution_time_minutes": data.get("duration_minutes"),
                "was_useful": resolution != "false_alarm",
            },
            source="external.pagerduty",
            function_name=event.function_name or await self._function_of(execution_id, correlation_id),
            correlation_id=correlation_id,
            causation_id=event.id,
        )
        return replace(mapped, id=derived_id(event, mapped.type))

    async def _mlflow_validation(self, event: EventRecord) -> EventRecord | None:
        tags = event.payload.get("tags")
        if not isinstance(tags, dict) or not tags.get("poet_execution_id"):
            return None
        if "drift_false_positive" in tags:
            validation = "false_positive"
        elif "drift_confirmed" in tags:
            validation = "confirmed_drift"
        else:
            return None
        execution_id = str(tags["poet_execution_id"])
        mapped = self._router.new_event(
            "feedback.mlflow_validation",
            {
                "execution_id": execution_id,
                "validation_type": validation,
                "experiment_id": event.payload.get("experiment_id", ""),
                "confidence": 0.8,  # seed 002: default confidence of MLflow tags
            },
            source="external.mlflow",
            function_name=event.function_name or await self._function_of(execution_id, event.correlation_id),
            correlation_id=event.correlation_id,
            causation_id=event.id,
        )
        return replace(mapped, id=derived_id(event, mapped.type))

    def _transpilation(self, event: EventRecord) -> EventRecord | None:
        data = event.payload
        function_name = str(data.get("function_name") or event.function_name)
        if not function_name:
            return None
        duration = data.get("duration", data.get("transpilation_time_ms"))
        mapped = self._router.new_event(
            TRANSPILATION_COMPLETED,
            {
                "function_name": function_name,
                "dana_source": data.get("dana_source", ""),
                "python_output": data.get("python_output", ""),
                "transpilation_time_ms": duration if duration is not None else 0,
            },
            source="aitomatic.transpilation_agent",
            function_name=function_name,
            correlation_id=event.correlation_id,
            causation_id=event.id,
        )
        return replace(mapped, id=derived_id(event, TRANSPILATION_COMPLETED))
