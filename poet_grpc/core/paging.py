"""Opaque page tokens: base64url JSON holding where the next page starts and a
digest of the filters, so a token cannot be replayed with other filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from poet_grpc.core.errors import InvalidArgument


def _digest(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]


def encode_token(after: int, filters: Any) -> str:
    raw = json.dumps({"a": after, "f": _digest(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: Any) -> int:
    """The position/number after which the next page starts (0 for no token)."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["a"]
        digest = data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument.single("page_token", "is not a token returned by this API", reason="INVALID_PAGE_TOKEN") from None
    if not isinstance(after, int) or after < 0:
        raise InvalidArgument.single("page_token", "is not a token returned by this API", reason="INVALID_PAGE_TOKEN")
    if digest != _digest(filters):
        raise InvalidArgument.single(
            "page_token", "was issued for different filters; repeat the original filters", reason="INVALID_PAGE_TOKEN"
        )
    return after


def page_size(requested: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    if requested < 0:
        raise InvalidArgument.single(field, "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)
