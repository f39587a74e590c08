"""asyncio locks by key (e.g. one per function identity), kept only while in use.

A lock exists while someone holds it or waits for it and is dropped with its
last user, so the table holds no more entries than there are keys in use:
callers may name as many keys as they like without it growing.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class KeyedLocks:
    """One asyncio.Lock per key; waiters for a key are served in arrival order."""

    def __init__(self) -> None:
        self._entries: dict[str, list] = {}  # key -> [lock, holders + waiters]

    def __len__(self) -> int:
        """Keys in use."""
        return len(self._entries)

    def users(self, key: str) -> int:
        """Who holds or waits for the key's lock (0 when nobody does)."""
        entry = self._entries.get(key)
        return entry[1] if entry else 0

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the key's lock while the block runs."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            # Also when cancelled while waiting: the entry goes with its last user.
            entry[1] -= 1
            if entry[1] == 0 and self._entries.get(key) is entry:
                del self._entries[key]
