"""Benchmark of POET on SQLite and on PostgreSQL with one and with three replicas; prints a table.

    .venv/bin/python bench/replicas.py [--quick] [--repeats 3]

Three setups, one after the other, each on a fresh log:
  SQLite          one `poet-grpc serve --no-gateway` on a SQLite file (synchronous=FULL);
  PostgreSQL x1   one `poet-grpc serve --no-gateway --db postgresql://...`;
  PostgreSQL x3   three such processes on one database.
The PostgreSQL cluster is the throwaway one of tests/postgres_support.py
(PostgresServer: fsync=off, full_page_writes=off), started by this script: its
commits are not flushed to disk, SQLite's are. Servers run with
POET_CHECKPOINT_SECONDS=1. All clients live in this one process; the servers, the
cluster and the clients share the machine's cores.

Measured per setup (callers are spread round-robin over the replicas):
  publish       events/s acknowledged: PublishEvents batches of 100, and 1-event calls;
  catch-up      one StreamEvents from position 0 (max_batch_size=500) over a log of
                --log-events events, on each replica in turn: events/s until it has them all;
  live          1-event publishes paced at --live-rate/s spread over the replicas, one
                live_only subscriber on every replica; latency = receive time minus
                the publish call's send time (time.time_ns() carried in the event id);
                and the same events/s in calls of LIVE_BATCH (10) events, with streams
                of one event per message and in batches (max_batch_size=100);
  Enhance       calls of distinct new functions, concurrent clients: calls/s, p50/p95.
Peers measured in the same run: ListDomains round trips (an RPC that does not
touch the store), and raw inserts on the same database engine, one row (or 100) per
transaction: psycopg on the same PostgreSQL server taking the same kind of lock
(SELECT pg_advisory_xact_lock(1)); sqlite3 with WAL and synchronous=FULL in the
same directory, BEGIN IMMEDIATE taking SQLite's one write lock. Medians over
--repeats runs; the machine is shared and noisy, so compare ratios and orders of
magnitude, not single digits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402
from _support import FUNCTION, Server, percentile  # noqa: E402
from postgres_support import PostgresServer, find_bin_dir  # noqa: E402

OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
SERVER_ENV = {"POET_CHECKPOINT_SECONDS": "1"}
LIVE_TARGET_MS = 50.0
LIVE_BATCH = 10
LIVE_STREAM_BATCH = 100
"""Events per PublishEvents call in the batched live measurement (the same events/s in fewer calls)."""
med = statistics.median


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Sizes:
    log_events: int
    batched_events: int
    single_events: int
    batch: int = 100
    batch_callers: int = 6
    single_callers: int = 12
    live_rate: int = 1000
    live_seconds: float = 5.0
    enhance_calls: int = 120
    enhance_callers: int = 6
    domains_calls: int = 1000
    raw_seconds: float = 2.0


# -- servers ----------------------------------------------------------------


class Replica:
    """One `poet-grpc serve` and a channel to it; its output is drained (and kept, the
    last lines) so a full pipe never blocks it."""

    def __init__(self, workdir: Path, db: str | None):
        self.server = Server(workdir, db=db, env=SERVER_ENV)
        self.output: collections.deque[str] = collections.deque(self.server.startup_lines, maxlen=200)
        threading.Thread(target=self._drain, daemon=True).start()
        self.channel = grpc.aio.insecure_channel(self.server.address, options=OPTIONS)
        self.stub = poet_service_pb2_grpc.PoetServiceStub(self.channel)

    def _drain(self) -> None:
        for line in self.server.process.stdout:
            self.output.append(line.rstrip("\n"))

    async def close(self) -> None:
        await self.channel.close()
        self.server.stop()
        if self.server.process.returncode not in (0, -15):
            progress(f"server exited {self.server.process.returncode}; its last output:\n" + "\n".join(self.output))


# -- measurements -------------------------------------------------------------


class CpuMeter:
    """CPU used between start() and stop(), in % of one core: this client process, the
    server processes (their own threads; not the worker processes they start), and
    the whole machine (busy % of all its cores, other users' work included)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: list[int]):
        self.pids = pids

    def _read(self):
        own = os.times()
        servers = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                servers += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return time.monotonic(), own.user + own.system, servers / self.TICK, sum(cpu), cpu[3] + cpu[4]

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> tuple[float, float, float]:
        t1, own1, srv1, total1, idle1 = self._read()
        t0, own0, srv0, total0, idle0 = self._start
        wall = t1 - t0
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        return 100 * (own1 - own0) / wall, 100 * (srv1 - srv0) / wall, 100 * busy


def _event(kind: str, n: int, event_id: str = "") -> events_pb2.Event:
    event = events_pb2.Event(id=event_id, type=kind, function_name="bench")
    event.payload.update({"n": n, "model_name": "churn", "drift_score": 0.42})
    return event


def received(item: pb.StreamEventsResponse) -> list[events_pb2.Event]:
    if item.HasField("event"):
        return [item.event]
    return list(item.batch.events) if item.HasField("batch") else []


async def publish_batched(stubs, total: int, batch: int, callers: int, kind: str = "bench.batch") -> float:
    """Events/s acknowledged for PublishEvents batches, `callers` at once, caller i on replica i % R."""
    requests = [pb.PublishEventsRequest(events=[_event(kind, i) for i in range(s, min(total, s + batch))])
                for s in range(0, total, batch)]
    started = time.perf_counter()

    async def worker(stub):
        while requests:
            await stub.PublishEvents(requests.pop())

    await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(callers)))
    return total / (time.perf_counter() - started)


async def publish_single(stubs, total: int, callers: int) -> tuple[float, list[float]]:
    """(events/s, ack ms) for 1-event PublishEvents calls, `callers` at once."""
    latencies: list[float] = []
    remaining = [total]

    async def worker(stub):
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            await stub.PublishEvents(pb.PublishEventsRequest(events=[_event("bench.single", 0)]))
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(callers)))
    return total / (time.perf_counter() - started), latencies


@dataclass
class CatchUp:
    rate: float
    """events/s until the stream had every event of the log"""
    early_caught_up: bool
    """a caught_up checkpoint came before the stream had sent the whole log"""
    first_wait_ms: float
    """until the first event arrived"""


async def catch_up(stub, expected: int) -> CatchUp:
    """Stream from position 0 until `expected` events (the whole log) are in."""
    got = 0
    early = False
    first = 0.0
    started = time.perf_counter()
    call = stub.StreamEvents(pb.StreamEventsRequest(after_position=0, max_batch_size=500))
    try:
        async with asyncio.timeout(300):
            async for item in call:
                if item.HasField("checkpoint") and item.checkpoint.caught_up and got < expected:
                    early = True
                if events := received(item):
                    if not got:
                        first = time.perf_counter()
                    got += len(events)
                    if got >= expected:
                        break
    finally:
        call.cancel()
    elapsed = time.perf_counter() - started
    if got < expected:
        raise SystemExit(f"catch-up: {got} of {expected} events in {elapsed:.0f} s")
    return CatchUp(expected / elapsed, early, (first - started) * 1000)


@dataclass
class Live:
    latencies: list[float] = field(default_factory=list)
    local: list[float] = field(default_factory=list)
    """deliveries by the replica the event was published to"""
    cross: list[float] = field(default_factory=list)
    """deliveries by another replica"""
    acks: list[float] = field(default_factory=list)
    published_rate: float = 0.0
    acked_rate: float = 0.0
    """events/s from the first send to the last ack"""
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """CpuMeter.stop() over the run"""
    missing: int = 0
    """(subscriber, acknowledged event) deliveries that did not arrive within 15 s of the last ack"""
    errors: collections.Counter = field(default_factory=collections.Counter)
    """failed PublishEvents calls, by status code"""


async def live_delivery(stubs, rate: int, seconds: float, tag: str, meter: CpuMeter, per_call: int = 1,
                        max_batch: int = 0) -> Live:
    """Publish `rate` events a second in calls of `per_call` events (call i to replica
    i % R), one live_only subscriber per replica; every subscriber should receive every event."""
    kind = f"bench.live.{tag}"
    total = int(rate * seconds)
    result = Live()
    calls = [stub.StreamEvents(pb.StreamEventsRequest(live_only=True, event_type=kind, max_batch_size=max_batch))
             for stub in stubs]
    for call in calls:
        async for item in call:
            if item.HasField("checkpoint") and item.checkpoint.caught_up:
                break
    counts = [0] * len(calls)

    async def read(index, call):
        async for item in call:
            now = time.time_ns()
            for event in received(item):
                _, replica, sent = event.id.rsplit("-", 2)
                ms = (now - int(sent)) / 1e6
                result.latencies.append(ms)
                (result.local if int(replica) == index else result.cross).append(ms)
                counts[index] += 1

    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(calls)]

    async def one(i):
        replica = i % len(stubs)
        started = time.perf_counter()
        sent_ns = time.time_ns()
        events = [_event(kind, i * per_call + k, f"{tag}.{i}.{k}-{replica}-{sent_ns}") for k in range(per_call)]
        try:
            await stubs[replica].PublishEvents(pb.PublishEventsRequest(events=events))
        except grpc.aio.AioRpcError as exc:
            result.errors[exc.code().name] += 1
            if sum(result.errors.values()) == 1:
                progress(f"live: PublishEvents to replica {replica + 1} failed after "
                         f"{(time.perf_counter() - started) * 1000:.0f} ms: {exc.code().name} {exc.details()!r} "
                         f"{exc.debug_error_string()!r}")
            return
        result.acks.extend([(time.perf_counter() - started) * 1000] * per_call)

    tasks = []
    meter.start()
    t0 = time.perf_counter()
    for i in range(total // per_call):
        delay = t0 + i * per_call / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    sent = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    result.acked_rate = len(result.acks) / (time.perf_counter() - t0)
    result.cpu = meter.stop()
    result.published_rate = total / sent
    # Every subscriber should get every acknowledged event (and may get some of the
    # failed calls' events too, if they were appended all the same).
    expected = len(result.acks)
    waited = time.perf_counter()
    while min(counts) < expected and time.perf_counter() - waited < 15 and not all(r.done() for r in readers):
        await asyncio.sleep(0.02)
    for task in readers:
        task.cancel()
    for task in readers:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - reported, counted as missing deliveries
            progress(f"live: a subscriber's stream failed: {exc!r}")
    for call in calls:
        call.cancel()
    result.missing = sum(max(0, expected - c) for c in counts)
    return result


async def enhance(stubs, calls: int, callers: int, offset: int) -> tuple[float, list[float]]:
    """(calls/s, latencies ms) of Enhance calls of distinct new functions."""
    queue = list(range(offset, offset + calls))
    samples: list[float] = []

    async def worker(stub):
        while queue:
            n = queue.pop()
            started = time.perf_counter()
            await stub.Enhance(pb.EnhanceRequest(function_name=f"score_{n}", original_code=FUNCTION.format(n=n)))
            samples.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(callers)))
    return calls / (time.perf_counter() - started), samples


async def list_domains(stubs, calls: int, callers: int) -> tuple[float, list[float]]:
    """(calls/s, latencies ms) of ListDomains round trips."""
    remaining = [calls]
    samples: list[float] = []

    async def worker(stub):
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            await stub.ListDomains(pb.ListDomainsRequest())
            samples.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(callers)))
    return calls / (time.perf_counter() - started), samples


# -- raw database peers ---------------------------------------------------------


async def raw_postgres(url: str, rows_per_txn: int, connections: int, seconds: float) -> float:
    """Rows/s inserted by `connections` psycopg connections, each transaction taking
    pg_advisory_xact_lock(1) and inserting `rows_per_txn` rows, for `seconds`."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("CREATE TABLE IF NOT EXISTS bench_raw (position bigserial PRIMARY KEY, id text, payload jsonb)")
    payload = '{"n": 0, "model_name": "churn", "drift_score": 0.42}'
    values = ", ".join(["(gen_random_uuid()::text, %s::jsonb)"] * rows_per_txn)
    sql = f"INSERT INTO bench_raw (id, payload) VALUES {values}"
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(connections)]
    done = [0]
    deadline = time.perf_counter() + seconds

    async def worker(conn):
        while time.perf_counter() < deadline:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(1)")
                await conn.execute(sql, [payload] * rows_per_txn)
            done[0] += rows_per_txn

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        elapsed = time.perf_counter() - started
        for conn in conns:
            await conn.close()
    return done[0] / elapsed


def raw_sqlite(path: Path, rows_per_txn: int, connections: int, seconds: float) -> float:
    """Rows/s inserted by `connections` sqlite3 connections (a thread each; WAL,
    synchronous=FULL, busy_timeout 5 s), `rows_per_txn` rows per BEGIN IMMEDIATE
    transaction (SQLite's one write lock), for `seconds`."""
    setup = sqlite3.connect(str(path), isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS bench_raw (position INTEGER PRIMARY KEY, id TEXT, payload TEXT)")
    setup.close()
    payload = '{"n": 0, "model_name": "churn", "drift_score": 0.42}'
    done = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        conn = sqlite3.connect(str(path), isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA synchronous = FULL")
        while time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO bench_raw (id, payload) VALUES (lower(hex(randomblob(16))), ?)",
                             [(payload,)] * rows_per_txn)
            conn.execute("COMMIT")
            with lock:
                done[0] += rows_per_txn
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - started)


# -- one setup -------------------------------------------------------------------


@dataclass
class Results:
    batched: list[float] = field(default_factory=list)
    single: list[tuple[float, list[float]]] = field(default_factory=list)
    catch_up: list[list[CatchUp]] = field(default_factory=list)
    """per repeat, one per replica"""
    live: list[Live] = field(default_factory=list)
    live_batched: list[Live] = field(default_factory=list)
    """the same rate in calls of LIVE_BATCH events"""
    live_batched_streams: list[Live] = field(default_factory=list)
    """and streams that send batches (max_batch_size=LIVE_STREAM_BATCH)"""
    enhance: list[tuple[float, list[float]]] = field(default_factory=list)
    domains_one: list[list[float]] = field(default_factory=list)
    domains_many: list[float] = field(default_factory=list)
    raw_single: list[float] = field(default_factory=list)
    raw_batch: list[float] = field(default_factory=list)
    raw_single_one: list[float] = field(default_factory=list)


async def run_setup(name: str, replicas: list[Replica], sizes: Sizes, repeats: int, raw, enhance_offset: int) -> Results:
    stubs = [r.stub for r in replicas]
    res = Results()
    say = lambda message: progress(f"{name}: {message}")  # noqa: E731
    for stub in stubs:  # warm up every channel
        await stub.ListDomains(pb.ListDomainsRequest())

    say(f"writing a log of {sizes.log_events} events (batches of 500, 4 callers)")
    await publish_batched(stubs, sizes.log_events, 500, 4, kind="bench.log")
    for rep in range(repeats):
        runs = []
        for i, stub in enumerate(stubs):
            runs.append(await catch_up(stub, sizes.log_events))
            say(f"catch-up {rep + 1}/{repeats} on replica {i + 1}: {runs[-1].rate:.0f} events/s, "
                f"first event after {runs[-1].first_wait_ms:.0f} ms"
                + (" (caught_up came before the whole log)" if runs[-1].early_caught_up else ""))
        res.catch_up.append(runs)

    for rep in range(repeats):
        res.batched.append(await publish_batched(stubs, sizes.batched_events, sizes.batch, sizes.batch_callers))
        say(f"publish batches of {sizes.batch} {rep + 1}/{repeats}: {res.batched[-1]:.0f} events/s")
    for rep in range(repeats):
        res.single.append(await publish_single(stubs, sizes.single_events, sizes.single_callers))
        say(f"publish 1 event/call {rep + 1}/{repeats}: {res.single[-1][0]:.0f} events/s")

    for rep in range(repeats):
        meter = CpuMeter([r.server.process.pid for r in replicas])
        live = await live_delivery(stubs, sizes.live_rate, sizes.live_seconds, f"r{rep}", meter)
        res.live.append(live)
        say(f"live {rep + 1}/{repeats}: sent {live.published_rate:.0f}/s, acked {live.acked_rate:.0f}/s, "
            f"CPU % client {live.cpu[0]:.0f} servers {live.cpu[1]:.0f} machine busy {live.cpu[2]:.0f}; delivery p50 "
            f"{percentile(live.latencies, .5) if live.latencies else float('nan'):.1f} ms p95 "
            f"{percentile(live.latencies, .95) if live.latencies else float('nan'):.1f} ms, {live.missing} missing, "
            f"{sum(live.errors.values())} publish calls failed")

    for rep in range(repeats):
        meter = CpuMeter([r.server.process.pid for r in replicas])
        live = await live_delivery(stubs, sizes.live_rate, sizes.live_seconds, f"b{rep}", meter, per_call=LIVE_BATCH)
        res.live_batched.append(live)
        say(f"live in calls of {LIVE_BATCH} {rep + 1}/{repeats}: acked {live.acked_rate:.0f}/s; delivery p50 "
            f"{percentile(live.latencies, .5) if live.latencies else float('nan'):.1f} ms p95 "
            f"{percentile(live.latencies, .95) if live.latencies else float('nan'):.1f} ms, {live.missing} missing")

    for rep in range(repeats):
        meter = CpuMeter([r.server.process.pid for r in replicas])
        live = await live_delivery(stubs, sizes.live_rate, sizes.live_seconds, f"s{rep}", meter, per_call=LIVE_BATCH,
                                   max_batch=LIVE_STREAM_BATCH)
        res.live_batched_streams.append(live)
        say(f"live in calls of {LIVE_BATCH}, batched streams {rep + 1}/{repeats}: acked {live.acked_rate:.0f}/s; "
            f"delivery p50 {percentile(live.latencies, .5) if live.latencies else float('nan'):.1f} ms p95 "
            f"{percentile(live.latencies, .95) if live.latencies else float('nan'):.1f} ms, {live.missing} missing")

    for rep in range(repeats):
        res.enhance.append(await enhance(stubs, sizes.enhance_calls, sizes.enhance_callers,
                                         enhance_offset + rep * sizes.enhance_calls))
        say(f"Enhance {rep + 1}/{repeats}: {res.enhance[-1][0]:.1f} calls/s, p50 {percentile(res.enhance[-1][1], .5):.0f} ms")

    for rep in range(repeats):
        res.domains_one.append((await list_domains(stubs, 300, 1))[1])
        res.domains_many.append((await list_domains(stubs, sizes.domains_calls, sizes.single_callers))[0])
        say(f"ListDomains {rep + 1}/{repeats}: p50 {percentile(res.domains_one[-1], .5):.2f} ms at 1 caller, "
            f"{res.domains_many[-1]:.0f}/s at {sizes.single_callers}")

    for rep in range(repeats):
        res.raw_single_one.append(await raw(1, 1))
        res.raw_single.append(await raw(1, sizes.single_callers))
        res.raw_batch.append(await raw(sizes.batch, sizes.batch_callers))
        say(f"raw inserts {rep + 1}/{repeats}: 1 row/txn {res.raw_single_one[-1]:.0f}/s (1 connection), "
            f"{res.raw_single[-1]:.0f}/s ({sizes.single_callers}); {sizes.batch} rows/txn {res.raw_batch[-1]:.0f} rows/s")
    return res


# -- table -------------------------------------------------------------------------


def pct(samples: list[float], q: float) -> float:
    return percentile(samples, q) if samples else float("nan")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def table(setups: list[tuple[str, int, Results]], sizes: Sizes, repeats: int, raw_kinds: list[str]) -> str:
    rows: list[tuple[str, list[str]]] = []
    by_name = {name: res for name, _, res in setups}

    def row(label: str, cell) -> None:
        rows.append((label, [cell(res, n) if res is not None else "(failed)" for _, n, res in setups]))

    def catch_up_cell(res: Results, n: int) -> str:
        per_replica = [med(run[i].rate for run in res.catch_up) for i in range(n)]
        text = f"{fmt_rate(med(per_replica))}"
        if n > 1:
            text += f" (slowest {fmt_rate(min(per_replica))})"
        early = sum(c.early_caught_up for run in res.catch_up for c in run)
        return text + (f" [{early}/{n * len(res.catch_up)} caught_up early]" if early else "")

    def live_cell(q: float, part: str = "latencies", runs: str = "live"):
        def cell(res: Results, n: int) -> str:
            values = [pct(getattr(live, part), q) for live in getattr(res, runs) if getattr(live, part)]
            return f"{med(values):.1f}" if values else "-"
        return cell

    row(f"publish, batches of {sizes.batch}, {sizes.batch_callers} callers (events/s)",
        lambda r, n: fmt_rate(med(r.batched)))
    row(f"publish, 1 event/call, {sizes.single_callers} callers (events/s)",
        lambda r, n: fmt_rate(med(s[0] for s in r.single)))
    row("  its ack p50 / p95 (ms)",
        lambda r, n: f"{med(pct(s[1], .5) for s in r.single):.1f} / {med(pct(s[1], .95) for s in r.single):.1f}")
    row(f"catch-up from 0 over {sizes.log_events} events, max_batch 500 (events/s, median of replicas)",
        catch_up_cell)
    row("  first event after (ms, worst replica)",
        lambda r, n: f"{max(med(run[i].first_wait_ms for run in r.catch_up) for i in range(n)):.0f}")
    row(f"live at {sizes.live_rate}/s: sent / acked (events/s)",
        lambda r, n: f"{fmt_rate(med(l.published_rate for l in r.live))} / {fmt_rate(med(l.acked_rate for l in r.live))}")
    row("  delivery p50 (ms)", live_cell(.5))
    row("  delivery p95 (ms)", live_cell(.95))
    row("  delivery p99 (ms)", live_cell(.99))
    row(f"  p95 < {LIVE_TARGET_MS:.0f} ms",
        lambda r, n: "yes" if med(pct(l.latencies, .95) for l in r.live) < LIVE_TARGET_MS else "NO")
    row("  p95 same replica / other replica (ms)",
        lambda r, n: f"{live_cell(.95, 'local')(r, n)} / {live_cell(.95, 'cross')(r, n)}")
    row("  publish ack p50 / p95 (ms)",
        lambda r, n: f"{med(pct(l.acks, .5) for l in r.live):.1f} / {med(pct(l.acks, .95) for l in r.live):.1f}")
    row("  deliveries missing (all runs)", lambda r, n: str(sum(l.missing for l in r.live)))
    row("  publish calls failed (all runs)",
        lambda r, n: ", ".join(f"{k} {v}" for k, v in sum((l.errors for l in r.live), collections.Counter()).items())
        or "0")
    row("  CPU: client / servers (% of a core); machine busy %",
        lambda r, n: " / ".join(f"{med(l.cpu[k] for l in r.live):.0f}" for k in range(3)))
    row(f"live at {sizes.live_rate}/s in calls of {LIVE_BATCH}: acked (events/s)",
        lambda r, n: fmt_rate(med(l.acked_rate for l in r.live_batched)))
    row("  delivery p50 / p95 / p99 (ms)",
        lambda r, n: " / ".join(live_cell(q, runs="live_batched")(r, n) for q in (.5, .95, .99)))
    row(f"  p95 < {LIVE_TARGET_MS:.0f} ms",
        lambda r, n: "yes" if med(pct(l.latencies, .95) for l in r.live_batched) < LIVE_TARGET_MS else "NO")
    row("  p95 same replica / other replica (ms)",
        lambda r, n: f"{live_cell(.95, 'local', 'live_batched')(r, n)} / {live_cell(.95, 'cross', 'live_batched')(r, n)}")
    row("  deliveries missing (all runs)", lambda r, n: str(sum(l.missing for l in r.live_batched)))
    row("  CPU: client / servers (% of a core); machine busy %",
        lambda r, n: " / ".join(f"{med(l.cpu[k] for l in r.live_batched):.0f}" for k in range(3)))
    row(f"  the same, streams in batches (max_batch_size={LIVE_STREAM_BATCH}): p50 / p95 / p99 (ms)",
        lambda r, n: " / ".join(live_cell(q, runs="live_batched_streams")(r, n) for q in (.5, .95, .99)))
    row(f"  p95 < {LIVE_TARGET_MS:.0f} ms",
        lambda r, n: "yes" if med(pct(l.latencies, .95) for l in r.live_batched_streams) < LIVE_TARGET_MS else "NO")
    row("  p95 same replica / other replica (ms)",
        lambda r, n: f"{live_cell(.95, 'local', 'live_batched_streams')(r, n)} / "
                     f"{live_cell(.95, 'cross', 'live_batched_streams')(r, n)}")
    row("  deliveries missing (all runs); CPU: client / servers / machine busy %",
        lambda r, n: f"{sum(l.missing for l in r.live_batched_streams)}; "
                     + " / ".join(f"{med(l.cpu[k] for l in r.live_batched_streams):.0f}" for k in range(3)))
    row(f"Enhance, {sizes.enhance_callers} callers, new functions (calls/s)",
        lambda r, n: fmt_rate(med(e[0] for e in r.enhance)))
    row("  its p50 / p95 (ms)",
        lambda r, n: f"{med(pct(e[1], .5) for e in r.enhance):.0f} / {med(pct(e[1], .95) for e in r.enhance):.0f}")
    row("peer: ListDomains round trip, 1 caller, p50 (ms)", lambda r, n: f"{med(pct(d, .5) for d in r.domains_one):.2f}")
    row(f"peer: ListDomains, {sizes.single_callers} callers (calls/s)", lambda r, n: fmt_rate(med(r.domains_many)))
    row("peer: raw inserts, 1 row/txn, 1 connection (rows/s)", lambda r, n: fmt_rate(med(r.raw_single_one)))
    row(f"peer: raw inserts, 1 row/txn, {sizes.single_callers} connections (rows/s)",
        lambda r, n: fmt_rate(med(r.raw_single)))
    row(f"peer: raw inserts, {sizes.batch} rows/txn, {sizes.batch_callers} connections (rows/s)",
        lambda r, n: fmt_rate(med(r.raw_batch)))
    row("ratio: publish batches / raw 100-row txns", lambda r, n: f"{med(r.batched) / med(r.raw_batch):.2f}")
    row("ratio: publish 1 event/call / raw 1-row txns (same concurrency)",
        lambda r, n: f"{med(s[0] for s in r.single) / med(r.raw_single):.2f}")
    row("ratio: publish 1 event/call / ListDomains calls (same concurrency)",
        lambda r, n: f"{med(s[0] for s in r.single) / med(r.domains_many):.2f}")
    row("ratio: Enhance p50 / ListDomains p50",
        lambda r, n: f"{med(pct(e[1], .5) for e in r.enhance) / med(pct(d, .5) for d in r.domains_one):.0f}")
    row("ratio: live delivery p50 / ListDomains p50",
        lambda r, n: f"{med(pct(l.latencies, .5) for l in r.live) / med(pct(d, .5) for d in r.domains_one):.1f}")

    names = [name for name, _, _ in setups]
    # Ratios between setups, of the main throughputs.
    def between(a: str, b: str, label: str):
        if by_name.get(a) is not None and by_name.get(b) is not None:
            ra, rb = by_name[a], by_name[b]
            pairs = [("publish batches", med(ra.batched), med(rb.batched)),
                     ("publish 1 event/call", med(s[0] for s in ra.single), med(s[0] for s in rb.single)),
                     ("catch-up", med(c.rate for run in ra.catch_up for c in run),
                      med(c.rate for run in rb.catch_up for c in run)),
                     ("Enhance calls/s", med(e[0] for e in ra.enhance), med(e[0] for e in rb.enhance))]
            extra.append(f"{label}: " + ", ".join(f"{what} {x / y:.2f}" for what, x, y in pairs))

    extra: list[str] = []
    if len(names) == 3:
        between(names[1], names[0], f"{names[1]} / {names[0]}")
        between(names[2], names[1], f"{names[2]} / {names[1]}")

    w0 = max(len(label) for label, _ in rows)
    widths = [max(len(names[i]), *(len(cells[i]) for _, cells in rows)) for i in range(len(names))]
    lines = [
        f"POET replicas bench: {os.cpu_count()} cores, medians of {repeats} run(s); SQLite synchronous=FULL; "
        f"PostgreSQL {raw_kinds[0]}",
        "",
        f"{'measure'.ljust(w0)} | " + " | ".join(n.rjust(w) for n, w in zip(names, widths)),
        f"{'-' * w0}-|-" + "-|-".join("-" * w for w in widths),
    ]
    for label, cells in rows:
        lines.append(f"{label.ljust(w0)} | " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)))
    lines.append("")
    lines.extend(extra)
    lines.append("raw inserts: " + "; ".join(raw_kinds[1:]))
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


async def main(args) -> None:
    if args.quick:
        sizes = Sizes(log_events=5000, batched_events=5000, single_events=1000, live_seconds=2.0,
                      enhance_calls=30, domains_calls=500, raw_seconds=1.0)
    else:
        sizes = Sizes(log_events=args.log_events, batched_events=20000, single_events=3000,
                      live_seconds=args.live_seconds)
    sizes.live_rate = args.live_rate
    repeats = args.repeats or (1 if args.quick else 3)
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("needs Debian's postgresql binaries (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql")
    wanted = [s.strip() for s in args.setups.split(",")]
    results: list[tuple[str, int, Results]] = []
    postgres = PostgresServer(bin_dir)
    progress(f"starting PostgreSQL ({bin_dir})")
    postgres.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            setups = [("SQLite", "sqlite", 1), ("PostgreSQL x1", "pg", 1), ("PostgreSQL x3", "pg", 3)]
            for index, (name, engine, count) in enumerate(setups):
                if engine + str(count) not in wanted:
                    continue
                workdir = Path(tmp) / f"setup{index}"
                workdir.mkdir()
                if engine == "sqlite":
                    db = None
                    raw_path = workdir / "raw.db"

                    async def raw(rows, connections, path=raw_path):
                        return await asyncio.to_thread(raw_sqlite, path, rows, connections, sizes.raw_seconds)
                else:
                    db = postgres.url(postgres.create_database())
                    raw_url = postgres.url(postgres.create_database())

                    async def raw(rows, connections, url=raw_url):
                        return await raw_postgres(url, rows, connections, sizes.raw_seconds)
                progress(f"{name}: starting {count} server(s)")
                replicas: list[Replica] = []
                try:
                    for _ in range(count):  # one after the other: the first one migrates
                        replicas.append(Replica(workdir, db))
                    res = await run_setup(name, replicas, sizes, repeats, raw, enhance_offset=index * 100_000)
                except (grpc.aio.AioRpcError, SystemExit) as exc:
                    # Reported in the table; the other setups are still measured.
                    progress(f"{name}: failed: {exc!r}")
                    res = None
                finally:
                    for replica in replicas:
                        await replica.close()
                results.append((name, count, res))
    finally:
        postgres.stop()
    raw_kinds = ["cluster of tests/postgres_support.py: fsync=off, full_page_writes=off (commits not flushed to disk)",
                 "SQLite column: sqlite3 (a thread per connection), WAL, synchronous=FULL, BEGIN IMMEDIATE; INSERT; COMMIT",
                 "PostgreSQL columns: psycopg, BEGIN; SELECT pg_advisory_xact_lock(1); INSERT; COMMIT, on the same server"]
    print()
    print(table(results, sizes, repeats, raw_kinds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run of smaller sizes (a smoke run)")
    parser.add_argument("--repeats", type=int, default=0, help="runs per measurement; medians are reported [3; --quick 1]")
    parser.add_argument("--log-events", type=int, default=20000, help="events in the log the catch-up reads")
    parser.add_argument("--live-rate", type=int, default=1000, help="events/s published in the live measurement")
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--setups", default="sqlite1,pg1,pg3", help="which setups, of sqlite1,pg1,pg3")
    asyncio.run(main(parser.parse_args()))
