"""Runs every Store call on one dedicated thread.

The Store (sqlite) is synchronous and owns a single connection; funnelling all
calls through one thread keeps that connection safe, makes commit order equal
to position order, and keeps the asyncio loop free while SQLite works.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from poet_grpc.store import Store

T = TypeVar("T")


class Database:
    def __init__(self, store: Store, thread: ThreadPoolExecutor):
        self._store = store
        self._thread = thread

    @classmethod
    async def open(cls, path, *, synchronous: str = "FULL") -> "Database":
        """Open (create, migrate) the store on its own thread."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poet-store")
        store = await asyncio.get_running_loop().run_in_executor(thread, lambda: Store(path, synchronous=synchronous))
        return cls(store, thread)

    async def call(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) on the store thread and return its result."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self._store)

    async def close(self) -> None:
        await self.call(lambda store: store.close())
        self._thread.shutdown(wait=True)
