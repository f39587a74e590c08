"""Runs every Store call on one dedicated thread, and group-commits writes.

The store (SQLite, or PostgreSQL when the database is a postgresql:// URL) is
synchronous and uses one connection at a time; funnelling all calls through one
thread keeps that connection safe, makes commit order equal to position order
within this process (across processes the store's write lock does), and keeps the
asyncio loop free while the database works.

Writes (`write`) are queued: while one group commits (and fsyncs), the writes
that arrive meanwhile wait, then run together in the next group: one
transaction, one fsync, each write in its own savepoint so that one failing
write undoes only itself. A caller is answered only after the commit that holds
its write, so an acknowledged write is durable (with synchronous=FULL).

The store thread takes the next group as soon as a commit ends, without a round
trip through the event loop (which may be busy serving calls): the loop only
hears about finished work.

On PostgreSQL, where several replicas may share the database, a Database also
carries what they coordinate with (store/_replicas.py): `leases`, so that each log
consumer runs on one replica at a time, and `log_changes`, wakeups when another
replica appends and a second connection (its own thread) to read its events with.
On SQLite the leases are granted at once and there are no other writers to hear of.

A database that cannot serve a call (store.StoreUnavailable: unreachable,
restarting) is reported to callers as Unavailable, with the store's retry delay.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Protocol, TypeVar

from poet_grpc.config import is_postgres_url
from poet_grpc.core.errors import Unavailable
from poet_grpc.core.paging import PageTokens
from poet_grpc.core.models import EventRecord
from poet_grpc.store import BaseStore, Store, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_GROUP = 512
"""Most writes committed in one group (the store may allow fewer: BaseStore.group_limit)."""

_STOP = object()


class _Work:
    """One queued store call: fn(store), answered through future on loop."""

    __slots__ = ("fn", "future", "loop", "write")

    def __init__(self, fn: Callable[[BaseStore], Any], loop: asyncio.AbstractEventLoop, *, write: bool):
        self.fn = fn
        self.loop = loop
        self.future = loop.create_future()
        self.write = write


class Leases(Protocol):
    """One holder at a time of each named lease, across the processes of a database."""

    async def acquire(self, name: str) -> asyncio.Event:
        """Wait until this process holds the lease; the event is set if it is lost."""

    async def release(self, name: str) -> None: ...

    async def close(self) -> None: ...


class LocalLeases:
    """One process alone on its database (SQLite): every lease is granted at once."""

    async def acquire(self, name: str) -> asyncio.Event:
        return asyncio.Event()

    async def release(self, name: str) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class LogChanges:
    """How a process hears of other processes' appends (see EventRouter.follow)."""

    reader: "Database"
    """A second connection to read them with, so reads do not queue behind writes."""
    wakeups: Callable[[], AsyncIterator[int | None]]
    """Yields whenever the log may have grown: the last position appended, or None (unknown)."""


class Database:
    def __init__(self, store: BaseStore, *, leases: Leases | None = None, log_changes: LogChanges | None = None):
        self.leases: Leases = leases or LocalLeases()
        self.log_changes = log_changes
        """None when this process is the only writer (SQLite)."""
        self._store = store
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._committed: list[Callable[[list[EventRecord], list[int]], None]] = []
        self._closed = False
        self._group_limit = min(MAX_GROUP, store.group_limit)
        self.page_tokens = PageTokens(store.page_token_key)
        """Signed with the database's own key: tokens outlive a restart."""
        self._thread = threading.Thread(target=self._serve, name="poet-store", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, db, *, synchronous: str = "FULL", clock: Callable[[], float] | None = None) -> "Database":
        """Open (create, migrate) the store off the event loop: PostgreSQL when db is
        a postgresql:// (or postgres://) URL, else the SQLite file at that path
        (synchronous: its mode). clock: the store's clock of append times (tests)."""
        extra = {} if clock is None else {"clock": clock}
        if is_postgres_url(db):
            from poet_grpc.store import PostgresLeases, PostgresStore, log_wakeups  # psycopg only when used

            url = str(db)
            store = await asyncio.to_thread(PostgresStore, url, **extra)
            try:
                reader = cls(await asyncio.to_thread(PostgresStore, url, application_name="poet-reader", **extra))
            except BaseException:
                store.close()
                raise
            return cls(store, leases=PostgresLeases(url),
                       log_changes=LogChanges(reader, lambda: log_wakeups(url)))
        else:
            store = await asyncio.to_thread(Store, db, synchronous=synchronous, **extra)
        return cls(store)

    async def call(self, fn: Callable[[BaseStore], T]) -> T:
        """Run fn(store) on the store thread and return its result (reads, or a
        write that must not wait for a group)."""
        return await self._submit(fn, write=False)

    def on_commit(self, listener: Callable[[list[EventRecord], list[int]], None]) -> None:
        """Call listener (on the event loop) with the events each group committed,
        in position order, and their stored sizes in bytes, before the group's
        callers are answered."""
        self._committed.append(listener)

    async def write(self, fn: Callable[[BaseStore], T]) -> T:
        """Run fn(store) as one atomic write, group-committed with concurrent ones;
        returns once it is committed (its exception if it failed: nothing of it is
        stored)."""
        return await self._submit(fn, write=True)

    async def _submit(self, fn: Callable[[BaseStore], T], *, write: bool) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        work = _Work(fn, asyncio.get_running_loop(), write=write)
        self._queue.put(work)
        return await work.future

    async def close(self) -> None:
        """Finish what is queued, then close the store."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        await self.leases.close()
        if self.log_changes is not None:
            await self.log_changes.reader.close()

    # -- the store thread ----------------------------------------------------

    def _serve(self) -> None:
        waiting = None  # a read taken while gathering a group: it runs next
        while True:
            work = waiting if waiting is not None else self._queue.get()
            waiting = None
            if work is _STOP:
                break
            if not work.write:
                self._answer_call(work)
                continue
            group = [work]
            # Everything already queued behind it joins the group, up to the first
            # read (reads keep their place in line).
            while len(group) < self._group_limit:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP or not more.write:
                    waiting = more
                    break
                group.append(more)
            self._commit(group)
        try:
            self._store.close()
        except Exception:  # noqa: BLE001 - closing at shutdown; nothing left to answer
            log.exception("closing the store failed")

    def _answer_call(self, work: _Work) -> None:
        try:
            result = work.fn(self._store)
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            _post(work.loop, _settle, work.future, False, _as_exception(exc))
        else:
            _post(work.loop, _settle, work.future, True, result)

    def _commit(self, group: list[_Work]) -> None:
        try:
            outcomes, appended = self._store.run_group([work.fn for work in group])
        except BaseException as exc:  # noqa: BLE001 - e.g. the connection is gone
            failure = _as_exception(exc)
            outcomes, appended = [(False, failure)] * len(group), []
        _post(group[0].loop, self._deliver, group, outcomes, appended)

    def _deliver(self, group: list[_Work], outcomes, appended) -> None:
        """On the loop: tell the commit listeners, then answer the group's callers."""
        if appended:
            events = [event for event, _ in appended]
            sizes = [size for _, size in appended]
            for listener in self._committed:
                try:
                    listener(events, sizes)
                except Exception:  # noqa: BLE001 - the commit stands; answer its callers
                    log.exception("commit listener failed")
        for work, (ok, result) in zip(group, outcomes):
            _settle(work.future, ok, result if ok else _as_exception(result))


def _as_exception(exc: BaseException) -> Exception:
    if isinstance(exc, StoreUnavailable):
        # The driver's words (hosts, ports) stay in the server log.
        log.debug("store unavailable: %s", exc)
        unavailable = Unavailable("the database cannot serve this call now; retry shortly (a write that was "
                                  "cut off may have been stored: retry it with the same request_id or event ids)",
                                  retry_after=max(0.25, exc.retry_after), reason="STORE_UNAVAILABLE")
        unavailable.__cause__ = exc
        return unavailable
    return exc if isinstance(exc, Exception) else RuntimeError(f"store call interrupted: {exc!r}")


def _settle(future: asyncio.Future, ok: bool, result: Any) -> None:
    if future.done():
        return  # the caller went away; a write is committed regardless
    if ok:
        future.set_result(result)
    else:
        future.set_exception(result)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more
