"""The learning loop: evidence in the log drives new versions.

Two entry points share one review:
- SubmitFeedback reviews the version right after recording the feedback, so it
  can answer requires_update with the new version.
- A background consumer tails the log from a durable position and reacts to what
  others publish: drift.detected -> alert.create_external; an unhelpful
  feedback.model_retrained -> learning.false_positive_detected; executions and
  drift verdicts -> review of the version they concern; function.feedback ->
  its review, unless it already had one (so a crash between the feedback's
  commit and its review loses nothing).

Derived events have ids computed from their trigger, so replaying the log after a
crash appends nothing twice. A review holds a per-function lock and regenerates
only while the reviewed version is still current: one trigger, one new version.
A feedback's verdict is durable (the version it caused, else a feedback_reviews
row), so it is reviewed once however many times it is handed over.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace

from poet_grpc.core import learning
from poet_grpc.core.consumer import consume
from poet_grpc.core.db import Database
from poet_grpc.core.enhancement import ENHANCEMENT_COMPLETED, LEARNING_CALLER, EnhancementService, Regeneration
from poet_grpc.core.errors import QuotaExceeded
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.keyed_locks import KeyedLocks
from poet_grpc.core.models import EventFilter, EventRecord, FunctionVersion
from poet_grpc.core.quotas import check as check_quota
from poet_grpc.core.versions import describe_changes
from poet_grpc.observability.metrics import Metrics
from poet_grpc.store import Store

log = logging.getLogger(__name__)

CONSUMER = "learning"
SOURCE = "poet.learning_engine"
_DERIVED = uuid.UUID("6f1d3b52-9a51-4c58-9d7e-2f3b5d0c7a10")
FUNCTION_FEEDBACK = "function.feedback"
_REACTS_TO = frozenset({"drift.detected", "feedback.model_retrained", "feedback.human_validation",
                        "feedback.alert_resolved", "feedback.mlflow_validation", "function.execution",
                        FUNCTION_FEEDBACK})


def derived_id(trigger: EventRecord, event_type: str) -> str:
    """The id of the event of this type derived from trigger: the same on every replay."""
    return str(uuid.uuid5(_DERIVED, f"{trigger.id}/{event_type}"))


class LearningLoop:
    def __init__(self, db: Database, router: EventRouter, enhancements: EnhancementService, policy: learning.LearningPolicy,
                 *, metrics: Metrics | None = None):
        self._db = db
        self._metrics = metrics or Metrics()
        self._router = router
        self._enhancements = enhancements
        self._policy = policy
        self._locks = KeyedLocks()
        """One review at a time per function identity (kept only while in use)."""
        self._task: asyncio.Task | None = None
        self._executed: dict[tuple[str, str], EventRecord] = {}
        """(function, version) executed in the batch being consumed -> its last execution."""

    # -- review ------------------------------------------------------------

    async def review(self, function_name: str, version: str, trigger: EventRecord) -> FunctionVersion | None:
        """Judge the version by its evidence; when the policy fires, generate, store
        and announce its successor and return it."""
        async with self._locks.hold(function_name):
            return await self._review(function_name, version, trigger)

    async def review_feedback(self, feedback: EventRecord) -> FunctionVersion | None:
        """Review the version a logged function.feedback is about, once: SubmitFeedback,
        its retries and the consumer all come here, and whoever comes after the first
        review gets its verdict (the version the feedback caused, or None)."""
        p = feedback.payload
        name = str(p.get("function_name") or feedback.function_name)
        async with self._locks.hold(name):
            reviewed, new = await self._db.call(lambda store: _verdict(store, feedback.id))
            if reviewed:
                return new
            new = await self._review(name, str(p.get("version") or ""), feedback)
            if new is None:
                # Another replica may have reviewed it meanwhile (the lock above is this
                # process's) and made the version this review then could not store.
                _, new = await self._db.call(lambda store: _verdict(store, feedback.id))
            if new is None:
                # A new version is its own record (its causation is the feedback).
                await self._db.write(lambda store: store.record_feedback_review(feedback.id, time.time()))
            return new

    async def feedback_verdict(self, feedback_id: str) -> FunctionVersion | None:
        """The version the feedback caused, if any (without reviewing it)."""
        return (await self._db.call(lambda store: _verdict(store, feedback_id)))[1]

    async def _review(self, function_name: str, version: str, trigger: EventRecord) -> FunctionVersion | None:
        """review, under the function's lock."""

        def read(store: Store):
            current = store.get_version(function_name, version)
            if current is None or not current.current:
                return None  # only the current version is judged
            parent = store.get_version(function_name, current.parent_version) if current.parent_version else None
            return current, parent, store.drift_verdicts(function_name, version)

        found = await self._db.call(read)
        if found is None:
            return None
        current, parent, verdicts = found
        finding = learning.evaluate(current, parent, self._policy)
        if finding is None:
            return None
        violations = await self._db.call(lambda store: _violations(store, current))
        suggestions = [str(s) for s in trigger.payload.get("suggestions") or []]
        job = Regeneration(
            parent=current,
            spec=learning.learned_spec(current, finding),
            reason=finding.reason,
            evidence=learning.evidence(current, finding, suggestions, violations),
            trigger=trigger,
            follow_up=lambda new: self._announcements(current, new, finding, trigger, verdicts),
        )
        try:
            # The loop's versions are the service's doing: no client pays for them,
            # but they count against versions per function, so feedback alone
            # cannot grow a function without bound.
            await self._db.call(lambda store: check_quota(
                store, self._enhancements.quotas, LEARNING_CALLER, function_name, 0, service=True
            ))
            new = await self._enhancements.regenerate(job)
        except QuotaExceeded as exc:
            log.warning("%s %s: no new version (%s): %s", function_name, current.version, finding.reason, exc.message)
            return None
        if new is not None:
            log.info("%s %s -> %s: %s", function_name, current.version, new.version, finding.reason)
            self._metrics.regenerations.labels(finding.pattern_type).inc()  # a fixed set (learning.Finding)
        return new

    def _announcements(
        self, old: FunctionVersion, new: FunctionVersion, finding: learning.Finding, trigger: EventRecord, verdicts
    ) -> list[EventRecord]:
        """learning.pattern_detected, function.update and enhancement.regenerated (seed 002)."""
        changes = describe_changes(old, new)
        threshold_changed = finding.pattern_type in ("threshold_too_sensitive", "missing_edge_case")
        new_threshold = new.code.params.get("drift_threshold") if threshold_changed else None
        common = dict(source=SOURCE, function_name=old.function_name, correlation_id=trigger.correlation_id, causation_id=trigger.id)
        return [
            self._router.new_event(
                "learning.pattern_detected",
                {
                    "pattern_type": finding.pattern_type,
                    "affected_functions": [old.function_name],
                    "confidence": round(min(1.0, finding.sample_size / (finding.sample_size + 5)), 4),
                    "evidence": {
                        "sample_size": finding.sample_size,
                        "correlation_strength": round(finding.rate, 4),
                        "business_impact": learning.business_impact(finding.rate),
                    },
                    "recommended_action": "; ".join(c.description for c in changes if c.type == "params") or "regenerate",
                    "function_name": old.function_name,
                    "version": old.version,
                },
                **common,
            ),
            self._router.new_event(
                "function.update",
                {
                    "function_name": old.function_name,
                    "old_version": old.version,
                    "new_version": new.version,
                    "reason": finding.reason,
                    "changes": [{"type": c.type, "description": c.description} for c in changes],
                },
                **common,
            ),
            self._router.new_event(
                "enhancement.regenerated",
                {
                    "function_name": old.function_name,
                    "old_version": old.version,
                    "new_version": new.version,
                    "regeneration_reason": finding.reason,
                    "improvements": [c.description for c in changes],
                    "expected_impact": learning.expected_impact(finding, verdicts, new_threshold),
                },
                **(common | {"source": "poet.generator"}),
            ),
        ]

    # -- the background consumer ------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="poet-learning-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _consume(self) -> None:
        async def handle(event: EventRecord) -> bool:
            await self._react(event)
            return False  # everything it does is in the log, with replay-safe ids

        await consume(self._db, self._router, CONSUMER, handle,
                      wants=lambda event: event.type in _REACTS_TO, after_batch=self._review_executed,
                      metrics=self._metrics)

    async def _review_executed(self) -> None:
        """Review each version that executions in the last batch concern, once: a
        review reads the version's aggregated metrics, so one review sees them all."""
        pending, self._executed = self._executed, {}
        for (function_name, version), trigger in pending.items():
            await self.review(function_name, version, trigger)

    async def _react(self, event: EventRecord) -> None:
        if event.type == "drift.detected":
            await self._router.append([self._alert(event)])
        elif event.type == "feedback.model_retrained":
            unhelpful = self._false_positive(event)
            if unhelpful is not None:
                await self._router.append([unhelpful])
            await self._review_execution(event)
        elif event.type in ("feedback.human_validation", "feedback.alert_resolved", "feedback.mlflow_validation"):
            await self._review_execution(event)
        elif event.type == "function.execution":
            version = event.payload.get("version") or ""
            if event.function_name and version:
                self._executed[(event.function_name, str(version))] = event  # reviewed after the batch
        elif event.type == FUNCTION_FEEDBACK:
            # Usually SubmitFeedback reviewed it already (then this is a read); after a
            # crash between its commit and its review, this is that review.
            await self.review_feedback(event)

    async def _review_execution(self, event: EventRecord) -> None:
        target = await self._db.call(
            lambda store: store.execution_target(str(event.payload.get("execution_id") or ""), event.correlation_id)
        )
        if target is not None:
            await self.review(target[0], target[1], event)

    def _alert(self, drift: EventRecord) -> EventRecord:
        """seed 002 handle_drift_detected: alert.create_external with severity and a correlation id."""
        p = drift.payload
        model = str(p.get("model_name") or drift.function_name or "model")
        # seed 002 form drift-<model>-<time>, plus the detection's id so that two
        # detections in one second do not share a conversation.
        correlation = drift.correlation_id or f"drift-{model}-{int(drift.timestamp)}-{drift.id[:8]}"
        alert = self._router.new_event(
            "alert.create_external",
            {
                "alert_type": "model_drift",
                "severity": learning.alert_severity(float(p.get("drift_score") or 0), float(p.get("statistical_significance", 1.0))),
                "model_name": model,
                "feature_name": p.get("feature_name", ""),
                "drift_score": p.get("drift_score", 0),
                "execution_id": p.get("execution_id", ""),
                "function_name": drift.function_name,
                "feedback_url": f"/poet/feedback/{drift.id}",
                "investigation_priority": "medium",
            },
            source=SOURCE,
            function_name=drift.function_name,
            correlation_id=correlation,
            causation_id=drift.id,
        )
        return _with_id(alert, derived_id(drift, "alert.create_external"))

    def _false_positive(self, retrained: EventRecord) -> EventRecord | None:
        """seed 002 handle_retraining_feedback: an unhelpful retraining flags a false positive."""
        p = retrained.payload
        if learning.retraining_helped(p):
            return None
        event = self._router.new_event(
            "learning.false_positive_detected",
            {
                "execution_id": p.get("execution_id", ""),
                "model_name": p.get("model_name", ""),
                "wasted_cost": p.get("retraining_cost_usd", 0),
                "adjustment_needed": "increase_threshold",
            },
            source=SOURCE,
            function_name=retrained.function_name,
            correlation_id=retrained.correlation_id,
            causation_id=retrained.id,
        )
        return _with_id(event, derived_id(retrained, "learning.false_positive_detected"))


def _violations(store: Store, version: FunctionVersion) -> list[dict[str, str]]:
    """The version's contract violations reported from the field since it was made (see
    learning.contract_violations). The enhanced code reports each (parameter, type) once
    per process, so a few hundred events cover many processes."""
    wanted = EventFilter(
        function_name=version.function_name, event_type=learning.CONTRACT_VIOLATION, start_time=version.created_at
    )
    events, _ = store.read_events(0, wanted, 500)
    return learning.contract_violations(events, version.version)


def _with_id(event: EventRecord, event_id: str) -> EventRecord:
    return replace(event, id=event_id)


def _verdict(store: Store, feedback_id: str) -> tuple[bool, FunctionVersion | None]:
    """(reviewed yet, the version the review made if any) of a feedback."""
    caused = store.caused_by(feedback_id, ENHANCEMENT_COMPLETED)
    if caused is not None:
        return True, store.get_version(caused.payload["function_name"], caused.payload["version"])
    return store.feedback_reviewed(feedback_id), None
