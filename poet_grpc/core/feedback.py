"""Feedback on function versions.

Each piece of feedback is logged as a `function.feedback` event (seed 002
schema); the store's projector folds it into the version's metrics, then the
learning loop judges the version and may generate its successor at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from poet_grpc.core.errors import NotFound
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.idempotency import seen_request
from poet_grpc.core.learning_loop import LearningLoop
from poet_grpc.store import Store

FUNCTION_FEEDBACK = "function.feedback"
ACCEPTED = "accepted"
REQUIRES_UPDATE = "requires_update"


@dataclass(frozen=True)
class Feedback:
    function_name: str
    version: str
    feedback_type: str
    """performance, error, user or system."""
    execution_id: str = ""
    rating: float | None = None
    comments: str = ""
    metrics: dict[str, float] | None = None
    """success_rate, avg_duration, error_rate as observed by the reporter."""
    suggestions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FeedbackOutcome:
    status: str
    """accepted or requires_update (seed 000)."""
    feedback_id: str
    new_version: str = ""
    update_reason: str = ""


class FeedbackService:
    def __init__(self, router: EventRouter, learning: LearningLoop):
        self._router = router
        self._learning = learning

    async def submit(self, feedback: Feedback, *, request_id: str = "", source: str = "poet.api") -> FeedbackOutcome:
        """Record feedback on an existing version, then let the learning loop judge it.
        A repeated request_id records nothing and gets the first answer again."""
        payload = asdict(feedback)
        fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if request_id:
            payload |= {"request_id": request_id, "request_fingerprint": fingerprint}
        event = self._router.new_event(FUNCTION_FEEDBACK, payload, source=source, function_name=feedback.function_name)

        def record(store: Store) -> FeedbackOutcome | None:
            with store.atomic():
                seen = seen_request(store, request_id, FUNCTION_FEEDBACK, fingerprint)
                if seen is not None:
                    return _answer(store, seen.result["feedback_id"])
                if store.get_version(feedback.function_name, feedback.version) is None:
                    raise NotFound("version", f"{feedback.function_name}/{feedback.version}")
                store.append_events([event])
                return None

        replayed = await self._router.commit(record)
        if replayed is not None:
            return replayed
        new = await self._learning.review(feedback.function_name, feedback.version, event)
        if new is None:
            return FeedbackOutcome(ACCEPTED, event.id)
        return FeedbackOutcome(REQUIRES_UPDATE, event.id, new.version, new.update_reason)


def _answer(store: Store, feedback_id: str) -> FeedbackOutcome:
    """The answer the feedback got when it was first recorded."""
    caused = store.caused_by(feedback_id, "enhancement.completed")
    if caused is None:
        return FeedbackOutcome(ACCEPTED, feedback_id)
    return FeedbackOutcome(REQUIRES_UPDATE, feedback_id, caused.payload["version"], caused.payload.get("update_reason", ""))
