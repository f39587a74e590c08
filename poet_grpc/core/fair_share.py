"""A fair share of a few slots among callers.

Generation (and with it the gate's sandbox workers) is a small pool. Without a
per-caller bound, one caller's slow submissions would hold every slot and every
other caller would wait behind them; with it, one caller holds at most half of
the slots and the rest stay free for others.
"""

from __future__ import annotations

import asyncio
import collections
from contextlib import asynccontextmanager
from typing import AsyncIterator


class FairShare:
    """At most `capacity` holders at once, and at most `per_caller` of them for any
    one caller (default: half the capacity, at least one). Waiters are served in
    arrival order among those whose caller is under its share."""

    def __init__(self, capacity: int, per_caller: int | None = None):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.per_caller = max(1, per_caller if per_caller is not None else capacity // 2)
        self._holding: collections.Counter[str] = collections.Counter()
        self._waiting: collections.deque[tuple[str, asyncio.Future]] = collections.deque()

    @property
    def in_use(self) -> int:
        return sum(self._holding.values())

    def holding(self, caller: str) -> int:
        return self._holding[caller]

    @asynccontextmanager
    async def slot(self, caller: str) -> AsyncIterator[None]:
        """Hold one slot for caller while the block runs."""
        await self._acquire(caller)
        try:
            yield
        finally:
            self._release(caller)

    async def _acquire(self, caller: str) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((caller, future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(caller)  # granted just as the waiter was cancelled
            else:
                self._remove(future)
            raise

    def _release(self, caller: str) -> None:
        self._holding[caller] -= 1
        if self._holding[caller] <= 0:
            del self._holding[caller]
        self._dispatch()

    def _remove(self, future: asyncio.Future) -> None:
        self._waiting = collections.deque(w for w in self._waiting if w[1] is not future)

    def _dispatch(self) -> None:
        if not self._waiting or self.in_use >= self.capacity:
            return
        kept: collections.deque[tuple[str, asyncio.Future]] = collections.deque()
        for caller, future in self._waiting:
            if future.done():
                continue
            if self.in_use < self.capacity and self._holding[caller] < self.per_caller:
                self._holding[caller] += 1
                future.set_result(None)
            else:
                kept.append((caller, future))
        self._waiting = kept
