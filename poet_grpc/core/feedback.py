"""Feedback on function versions.

Each piece of feedback is logged as a `function.feedback` event (seed 002
schema); the store's projector folds it into the version's metrics, then the
learning loop judges the version and may generate its successor at once. If the
server dies between the two, the learning loop's consumer does the review after
the restart, and a retry with the same request_id gets (or does) it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from poet_grpc.core.errors import NotFound
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.idempotency import seen_request
from poet_grpc.core.learning_loop import FUNCTION_FEEDBACK, LearningLoop
from poet_grpc.core.models import EventRecord
from poet_grpc.store import Store

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
        A repeated request_id records nothing and gets the first feedback's answer
        (reviewing it first if it never was)."""
        payload = asdict(feedback)
        fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if request_id:
            payload |= {"request_id": request_id, "request_fingerprint": fingerprint}
        event = self._router.new_event(FUNCTION_FEEDBACK, payload, source=source, function_name=feedback.function_name)

        def record(store: Store) -> EventRecord | str:
            """The feedback to review: this one, now logged, or the one the request_id
            logged before (only its id once retention deleted it)."""
            with store.atomic():
                seen = seen_request(store, request_id, FUNCTION_FEEDBACK, fingerprint)
                if seen is not None:
                    feedback_id = seen.result["feedback_id"]
                    return store.get_event(feedback_id) or feedback_id
                if store.get_version(feedback.function_name, feedback.version) is None:
                    raise NotFound("version", f"{feedback.function_name}/{feedback.version}")
                store.append_events([event])
                return event

        logged = await self._router.commit(record)
        if isinstance(logged, str):
            feedback_id, new = logged, await self._learning.feedback_verdict(logged)
        else:
            feedback_id, new = logged.id, await self._learning.review_feedback(logged)
        if new is None:
            return FeedbackOutcome(ACCEPTED, feedback_id)
        return FeedbackOutcome(REQUIRES_UPDATE, feedback_id, new.version, new.update_reason)
