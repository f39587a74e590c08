"""Runs every Store call on one dedicated thread, and group-commits writes.

The Store (sqlite) is synchronous and owns a single connection; funnelling all
calls through one thread keeps that connection safe, makes commit order equal
to position order, and keeps the asyncio loop free while SQLite works.

Writes (`write`) are queued: while one group commits (and fsyncs), the writes
that arrive meanwhile wait, then run together in the next group: one
transaction, one fsync, each write in its own savepoint so that one failing
write undoes only itself. A caller is answered only after the commit that holds
its write, so an acknowledged write is durable (with synchronous=FULL).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from poet_grpc.core.models import EventRecord
from poet_grpc.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_GROUP = 512
"""Most writes committed in one group."""


class Database:
    def __init__(self, store: Store, thread: ThreadPoolExecutor):
        self._store = store
        self._thread = thread
        self._pending: list[tuple[Callable[[Store], object], asyncio.Future]] = []
        self._writer: asyncio.Task | None = None
        self._committed: list[Callable[[list[EventRecord], list[int]], None]] = []

    @classmethod
    async def open(cls, path, *, synchronous: str = "FULL") -> "Database":
        """Open (create, migrate) the store on its own thread."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poet-store")
        store = await asyncio.get_running_loop().run_in_executor(thread, lambda: Store(path, synchronous=synchronous))
        return cls(store, thread)

    async def call(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) on the store thread and return its result (reads, or a
        write that must not wait for a group)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self._store)

    def on_commit(self, listener: Callable[[list[EventRecord], list[int]], None]) -> None:
        """Call listener (on the event loop) with the events each group committed,
        in position order, and their stored sizes in bytes, before the group's
        callers are answered."""
        self._committed.append(listener)

    async def write(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) as one atomic write, group-committed with concurrent ones;
        returns once it is committed (its exception if it failed: nothing of it is
        stored)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_groups(), name="poet-group-commit")
        return await future

    async def _write_groups(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            try:
                outcomes, appended = await loop.run_in_executor(
                    self._thread, self._store.run_group, [fn for fn, _ in group]
                )
            except BaseException as exc:  # noqa: BLE001 - e.g. the executor is shut down
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            if appended:
                events = [event for event, _ in appended]
                sizes = [size for _, size in appended]
                for listener in self._committed:
                    try:
                        listener(events, sizes)
                    except Exception:  # noqa: BLE001 - the commit stands; answer its callers
                        log.exception("commit listener failed")
            for (_, future), (ok, result) in zip(group, outcomes):
                if future.done():
                    continue  # the caller went away; its write is committed regardless
                if ok:
                    future.set_result(result)
                else:
                    future.set_exception(result)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer}, timeout=10)
        await self.call(lambda store: store.close())
        self._thread.shutdown(wait=True)
