"""Opaque page tokens: base64url of JSON holding where the next page starts and a
digest of the filters (so a token cannot be replayed with other filters), signed
with HMAC-SHA256 so a client cannot forge or edit one.

The signing key is stored in the database (core.db.Database.page_tokens), so
tokens survive a restart and a token of one database is refused by another."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from poet_grpc.core.errors import InvalidArgument

MAX_POSITION = 2**63 - 1
"""Largest position or id a token may carry: SQLite's INTEGER is int64."""
MAX_TOKEN_CHARS = 512
_MAC_BYTES = 16
def _mac(key: bytes, raw: bytes) -> bytes:
    return hmac.new(key, raw, hashlib.sha256).digest()[:_MAC_BYTES]


def _digest(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]


def _invalid() -> InvalidArgument:
    return InvalidArgument.single("page_token", "is not a token returned by this API", reason="INVALID_PAGE_TOKEN")


class PageTokens:
    """Issues and checks the page tokens of one database."""

    def __init__(self, key: bytes):
        self._key = key

    def encode(self, after: int, filters: Any) -> str:
        raw = json.dumps({"a": after, "f": _digest(filters)}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw + _mac(self._key, raw)).decode().rstrip("=")

    def decode(self, token: str, filters: Any) -> int:
        """The position/number after which the next page starts (0 for no token)."""
        if not token:
            return 0
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid()
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        raw, mac = blob[:-_MAC_BYTES], blob[-_MAC_BYTES:]
        if not raw or not hmac.compare_digest(mac, _mac(self._key, raw)):
            raise _invalid()
        try:
            data = json.loads(raw)
            after = data["a"]
            digest = data["f"]
        except (ValueError, KeyError, TypeError):
            raise _invalid() from None
        # bool is an int too; and the position is bound into SQLite, an int64.
        if type(after) is not int or not 0 <= after <= MAX_POSITION:
            raise _invalid()
        if digest != _digest(filters):
            raise InvalidArgument.single(
                "page_token", "was issued for different filters; repeat the original filters",
                reason="INVALID_PAGE_TOKEN",
            )
        return after


def page_size(requested: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    if requested < 0:
        raise InvalidArgument.single(field, "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)
