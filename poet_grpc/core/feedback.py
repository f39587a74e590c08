"""Feedback on function versions.

Each piece of feedback is logged as a `function.feedback` event (seed 002
schema); the store's projector folds it into the version's metrics. Deciding
that feedback calls for a new version is the learning policy's job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from poet_grpc.core.errors import NotFound
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.idempotency import seen_request
from poet_grpc.store import Store

FUNCTION_FEEDBACK = "function.feedback"
ACCEPTED = "accepted"


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
    def __init__(self, router: EventRouter):
        self._router = router

    async def submit(self, feedback: Feedback, *, request_id: str = "", source: str = "poet.api") -> FeedbackOutcome:
        """Record feedback on an existing version; a repeated request_id records nothing."""
        payload = asdict(feedback)
        fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if request_id:
            payload |= {"request_id": request_id, "request_fingerprint": fingerprint}
        event = self._router.new_event(
            FUNCTION_FEEDBACK, payload, source=source, function_name=feedback.function_name
        )

        def record(store: Store) -> FeedbackOutcome:
            with store.atomic():
                seen = seen_request(store, request_id, FUNCTION_FEEDBACK, fingerprint)
                if seen is not None:
                    return FeedbackOutcome(ACCEPTED, seen.result["feedback_id"])
                if store.get_version(feedback.function_name, feedback.version) is None:
                    raise NotFound("version", f"{feedback.function_name}/{feedback.version}")
                store.append_events([event])
                return FeedbackOutcome(ACCEPTED, event.id)

        return await self._router.commit(record)
