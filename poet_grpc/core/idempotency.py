"""Replaying requests that carry a request_id (AIP-155)."""

from __future__ import annotations

from poet_grpc.core.errors import Conflict
from poet_grpc.store import Store, StoredRequest


def seen_request(store: Store, request_id: str, operation: str, fingerprint: str) -> StoredRequest | None:
    """The stored record of an earlier request with this request_id, if any.

    Conflict when the id was used for a different operation or content: a
    retry must repeat the original request exactly.
    """
    if not request_id:
        return None
    seen = store.get_request(request_id)
    if seen is not None and (seen.operation != operation or seen.fingerprint != fingerprint):
        raise Conflict(
            "request_id was already used for a different request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id},
        )
    return seen
