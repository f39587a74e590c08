"""What replicas sharing one PostgreSQL database need besides the store: wakeups when
another replica appends (LISTEN/NOTIFY), and leases, so that each of the service's
log consumers runs on one replica at a time.

Both keep a connection of their own (asyncio, in the event loop), apart from the
store's: a wakeup must not wait behind a group commit, and a lease lives exactly as
long as its session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import AsyncIterator

import psycopg

from ._postgres import LOG_CHANNEL, connection_options

log = logging.getLogger(__name__)

LEASE_LOCKS = 75_041_750
"""First key of the session advisory locks that are consumer leases (the second is
lease_key(name)); the store's write lock uses the one-key form, so they never meet."""
CHECK_SECONDS = 1.0
"""How often a held lease's session is checked, and a wanted one asked for again."""
POLL_SECONDS = 5.0
"""Wakeups come at least this often, notifications or not (a safety net)."""
RETRY_MAX_SECONDS = 5.0


def lease_key(name: str) -> int:
    """The second key of a consumer's lease lock: a signed 32-bit hash of its name."""
    return zlib.crc32(name.encode("utf-8")) - 2**31


def _options(role: str) -> dict:
    return connection_options(5.0, f"poet-{role} pid={os.getpid()}")


async def log_wakeups(url: str) -> AsyncIterator[int | None]:
    """Yields whenever the log may have grown: the last position notified (several
    notifications arriving together wake once, with the highest), or None when it is
    not known: on every (re)connection (what was appended while not listening), at
    least every POLL_SECONDS, and at each try while the database is unreachable (it
    keeps trying, with backoff)."""
    delay = 0.0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, **_options("listen")) as conn:
                await conn.execute(f"LISTEN {LOG_CHANNEL}")
                delay = 0.0
                yield None  # listening from here on: anything committed before is read now
                while True:
                    last: int | None = None
                    async for notify in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                        last = _position(notify.payload)
                    if last is not None:
                        # Drain what queued meanwhile without waiting, then wake once.
                        async for notify in conn.notifies(timeout=0):
                            last = max(last, _position(notify.payload))
                    yield last
        except psycopg.Error as exc:
            delay = min(RETRY_MAX_SECONDS, max(0.25, delay * 2))
            log.warning("not listening for appends (%s); retrying in %.2g s", exc, delay)
            yield None
            await asyncio.sleep(delay)


def _position(payload: str) -> int:
    try:
        return int(payload)
    except ValueError:
        return 2**63 - 1  # not ours: read the log to be sure


class PostgresLeases:
    """Consumer leases across replicas: a session advisory lock per consumer, all on one
    connection of this process's. PostgreSQL releases a session's locks when the
    session ends, so a replica that dies (kill -9, a lost host: TCP keepalives) frees
    its leases, and another one's next try (every CHECK_SECONDS) takes them over.

    The connection is checked every CHECK_SECONDS; when the check fails every lease of
    this process is reported lost (its consumers stop) before reconnecting. The
    server ends a dead peer's session within the keepalive bound, about as long as a
    cut-off holder takes to notice, so two holders overlap, if at all, only across a
    partition; the consumers are idempotent for what the log records."""

    def __init__(self, url: str):
        self._url = url
        self._conn: psycopg.AsyncConnection | None = None
        self._use = asyncio.Lock()  # one statement at a time on the connection
        self._held: dict[str, asyncio.Event] = {}
        self._watch: asyncio.Task | None = None
        self._closed = False

    async def acquire(self, name: str) -> asyncio.Event:
        """Wait until this process holds the lease of name; returns an event that is
        set when the lease is lost (the connection failed). Asking for a lease
        already held is a mistake (ValueError)."""
        if name in self._held:
            raise ValueError(f"lease {name!r} is already held here")
        key = lease_key(name)
        announced = False
        delay = CHECK_SECONDS
        while not self._closed:
            try:
                async with self._use:
                    conn = await self._connection()
                    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEASE_LOCKS, key))
                    granted = (await cursor.fetchone())[0]
                    if granted:
                        lost = self._held[name] = asyncio.Event()
                        log.info("lease %s: held here", name)
                        self._ensure_watch()
                        return lost
                delay = CHECK_SECONDS
                if not announced:
                    announced = True
                    log.info("lease %s: held by another replica; waiting", name)
            except psycopg.Error as exc:
                async with self._use:
                    await self._lost_connection(exc)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
            await asyncio.sleep(delay)
        raise asyncio.CancelledError

    async def release(self, name: str) -> None:
        lost = self._held.pop(name, None)
        if lost is None or lost.is_set():
            return  # lost with its session: nothing to unlock
        try:
            async with self._use:
                if self._conn is not None:
                    await self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LEASE_LOCKS, lease_key(name)))
        except psycopg.Error as exc:
            async with self._use:
                await self._lost_connection(exc)

    async def close(self) -> None:
        """Release every lease (by ending the session)."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
        for lost in self._held.values():
            lost.set()
        self._held.clear()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, **_options("leases"))
        return self._conn

    async def _lost_connection(self, exc: Exception) -> None:
        if self._held:
            log.warning("leases %s lost with their connection (%s)", ", ".join(sorted(self._held)), exc)
        for lost in self._held.values():
            lost.set()
        self._held.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except psycopg.Error:
                pass

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._check(), name="poet-leases")

    async def _check(self) -> None:
        """While leases are held: check their session every CHECK_SECONDS."""
        while self._held:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                async with self._use:
                    if self._held and self._conn is not None:
                        async with asyncio.timeout(CHECK_SECONDS * 3):
                            await self._conn.execute("SELECT 1")
            except (psycopg.Error, TimeoutError) as exc:
                async with self._use:
                    await self._lost_connection(exc)
