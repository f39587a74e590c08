"""Torture test of several replicas on one PostgreSQL database.

Three `poet-grpc serve` processes share one fresh database. For a while
(POET_TORTURE_SECONDS, default 12 s of load; 120 or more for a soak):

- publishers on every replica call PublishEvents with batches of 1, 5 and 50
  events of unique ids, and record the position each acknowledged event got;
- threads of this process write to the same database through PostgresStore:
  most of their transactions append and then roll back (they take the write lock
  and positions max + 1, then give them up), the others commit;
- subscribers on every replica (StreamEvents, one event per message or in
  batches) hang up at random moments and resume with after_position = the last
  position they received, on the same replica or on another one;
- every few seconds one replica is killed with SIGKILL while its publishers are
  mid-call (those calls are not acknowledged: their events may or may not be in
  the log), its subscribers move to a surviving replica, and it is restarted.

Then publishing stops, every subscriber is waited for until it has reached the
log's last position, and the test checks: the log's positions run 1..N; every
acknowledged event is in it exactly once at its acknowledged position; no event
of a rolled-back transaction is in it, nor any event nobody sent; every
subscriber received exactly the log after its start position, in order, once
each; and every replica's ListEvents gives the same log.

Failures say what was missing, duplicated or out of place (and on which
connection of the subscriber); the replicas' output is in their log files under
the test's tmp_path. The run prints its seed (POET_TORTURE_SEED=...): setting it
repeats the random choices, though not the timing. The default run takes about
20-45 s of wall time on two shared cores.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
import pytest

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.core.models import EventRecord

ROOT = Path(__file__).resolve().parents[2]
LOAD_SECONDS = float(os.environ.get("POET_TORTURE_SECONDS", "12"))
SEED = int(os.environ.get("POET_TORTURE_SEED", str(random.randrange(1 << 32))))
REPLICAS = 3
PUBLISHERS_PER_REPLICA = 4
SUBSCRIBERS = ((0, ""), (7, ""), (500, ""), (20, "torture.direct"))
"""The subscribers of each replica: (max_batch_size, event_type filter). The filtered
one sees mostly checkpoints (the direct appends are few), and resumes after the
last position a checkpoint gave it when that is beyond its last event."""
DIRECT_WRITERS = 2
BATCH_SIZES = (1, 1, 5, 50)
SWITCH_REPLICA = 0.3
"""Chance that a subscriber resumes on another replica after hanging up."""
MEAN_STREAM_SECONDS = 1.0
"""Mean time a subscriber stays connected before hanging up."""
KILL_EVERY = 5.0
"""Seconds between kills (the first after 3 s; none in the last 2 s of the load)."""
CATCH_UP_SECONDS = 45.0
"""How long subscribers may take to reach the log's end once publishing stops."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Replica:
    """One `poet-grpc serve` process (restarted on a new port after a kill) and a channel to it."""

    def __init__(self, index: int, url: str, log_dir: Path):
        self.index = index
        self.url = url
        self.log_dir = log_dir
        self.generation = 0
        """Incremented at each start; calls remember the generation they were made to."""
        self.killed: set[int] = set()
        self.up = False
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.address = ""
        self.channel: grpc.aio.Channel | None = None
        self.old_channels: list[grpc.aio.Channel] = []
        self.stub: poet_service_pb2_grpc.PoetServiceStub | None = None
        self.inflight = 0
        """PublishEvents calls under way to the current process."""
        self.streams = 0
        """StreamEvents calls open on the current process."""

    def __repr__(self) -> str:
        return f"replica {self.index} (generation {self.generation}, {self.address})"

    def _spawn(self, generation: int) -> tuple[subprocess.Popen, str, Path]:
        """Start the process and wait until it listens (blocking: run in a thread)."""
        for attempt in range(3):  # the free port may be taken before the server binds it
            try:
                return self._spawn_once(generation, attempt)
            except OSError as exc:
                if attempt == 2:
                    raise AssertionError(f"replica {self.index} did not start: {exc}") from None

    def _spawn_once(self, generation: int, attempt: int) -> tuple[subprocess.Popen, str, Path]:
        address = f"127.0.0.1:{free_port()}"
        log_path = self.log_dir / f"replica-{self.index}-{generation}{'abc'[attempt]}.log"
        # One generator worker: this test enhances nothing, and warm sandbox workers cost
        # every (re)start time on a small machine.
        env = dict(os.environ, POET_LOG_LEVEL="WARNING", POET_CHECKPOINT_SECONDS="1", POET_GENERATOR_WORKERS="1")
        with open(log_path, "wb") as out:  # a file, not a pipe: nobody has to keep reading it
            process = subprocess.Popen(
                [sys.executable, "-m", "poet_grpc", "serve", "--no-gateway", "--grpc-listen", address,
                 "--db", self.url],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "gRPC listening" in log_tail(log_path, 100_000):
                return process, address, log_path
            if process.poll() is not None:
                break
            time.sleep(0.05)
        process.kill()
        process.wait()
        output = log_tail(log_path)
        if "address already in use" in output.lower() or "failed to bind" in output.lower():
            raise OSError(f"port taken: {output}")
        raise AssertionError(f"replica {self.index} did not start (exit {process.returncode}): {output}")

    async def start(self) -> None:
        process, address, log_path = await asyncio.to_thread(self._spawn, self.generation + 1)
        self.process, self.address, self.log_path = process, address, log_path
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = poet_service_pb2_grpc.PoetServiceStub(self.channel)
        self.inflight = self.streams = 0
        self.generation += 1
        self.up = True

    async def kill(self) -> None:
        """SIGKILL: whatever is in flight stays unanswered."""
        self.up = False
        self.killed.add(self.generation)
        os.kill(self.process.pid, signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 30)
        assert self.process.returncode == -signal.SIGKILL, f"{self} ended with {self.process.returncode}"
        # The channel stays open (closed at the end): its calls fail as a client of
        # a crashed server sees it, not as cancelled here.
        self.old_channels.append(self.channel)

    async def stop(self) -> None:
        for channel in [*self.old_channels, self.channel]:
            if channel is not None:
                await channel.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 30)


@dataclass
class Subscriber:
    name: str
    batch: int
    """max_batch_size asked for (0: one event per message)."""
    start: int
    """after_position of its first call: it must receive the log after it."""
    replica: int
    event_type: str = ""
    last: int = 0
    """Where it resumes: its last event's position, or a later checkpoint's (filtered)."""
    received: list[tuple[int, str]] = field(default_factory=list)
    connections: list[tuple[int, int, int, int, int, str]] = field(default_factory=list)
    """(replica, generation, after_position, first index in received, events, how it ended)."""
    anomalies: list[str] = field(default_factory=list)
    failovers: int = 0
    finished: bool = False

    def connection_of(self, index: int) -> str:
        """Which connection delivered received[index]."""
        for replica, generation, after, first, count, end in self.connections:
            if first <= index < first + count:
                return f"replica {replica} gen {generation} after_position={after} ({count} events, {end})"
        return "?"


class Torture:
    def __init__(self, url: str, log_dir: Path, rng: random.Random):
        self.url = url
        self.rng = rng
        self.replicas = [Replica(i, url, log_dir) for i in range(REPLICAS)]
        self.acked: dict[str, tuple[int, int]] = {}
        """Acknowledged event id -> (position, replica index)."""
        self.sent: set[str] = set()
        """Every id given to PublishEvents (acknowledged or not)."""
        self.committed: dict[str, int] = {}
        """Direct appends that committed: id -> position."""
        self.rolled_back: set[str] = set()
        self.rolled_back_positions: set[int] = set()
        self.errors: list[str] = []
        """Failures that no kill explains."""
        self.stats = Counter()
        self.slowest_publish = 0.0
        self.stop_publishing = False
        self.stop_direct = threading.Event()
        self.target: int | None = None
        """The log's last position once publishing has stopped."""
        self.subscribers: list[Subscriber] = []
        self.types: dict[int, str] = {}
        """Event type at each position of the final log."""

    # -- load ------------------------------------------------------------

    async def publisher(self, replica: Replica, rng: random.Random) -> None:
        while not self.stop_publishing:
            if not replica.up:
                await asyncio.sleep(0.05)
                continue
            generation, stub = replica.generation, replica.stub
            ids = [str(uuid.uuid4()) for _ in range(rng.choice(BATCH_SIZES))]
            request = pb.PublishEventsRequest(events=[
                events_pb2.Event(id=i, type="torture.published", source=f"replica-{replica.index}") for i in ids
            ])
            self.sent.update(ids)
            replica.inflight += 1
            calling = time.monotonic()
            try:
                response = await stub.PublishEvents(request, timeout=60)
            except grpc.aio.AioRpcError as error:
                if generation in replica.killed:
                    self.stats["unacknowledged calls (killed replica)"] += 1
                else:
                    self.errors.append(f"PublishEvents on replica {replica.index} gen {generation}: "
                                       f"{error.code().name} {error.details()}")
                    await asyncio.sleep(0.1)
                continue
            finally:
                if replica.generation == generation:
                    replica.inflight -= 1
            results = list(response.results)
            if [r.id for r in results] != ids:
                self.errors.append(f"PublishEvents on replica {replica.index} answered ids "
                                   f"{[r.id for r in results][:3]}... for {ids[:3]}...")
                continue
            for r in results:
                if r.duplicate:
                    self.errors.append(f"fresh id {r.id} reported as a duplicate (position {r.position})")
                self.acked[r.id] = (r.position, replica.index)
            self.stats["acknowledged calls"] += 1
            self.slowest_publish = max(self.slowest_publish, time.monotonic() - calling)
            await asyncio.sleep(0)

    def direct_writer(self, rng: random.Random) -> None:
        """Transactions on the database from outside the replicas: mostly rolled back."""
        from poet_grpc.store import PostgresStore

        class RolledBack(Exception):
            pass

        try:
            store = PostgresStore(self.url)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"direct writer could not open the store: {exc!r}")
            return
        try:
            while not self.stop_direct.is_set():
                records = [EventRecord(id=str(uuid.uuid4()), type="torture.direct", source="tests",
                                       timestamp=time.time()) for _ in range(rng.choice((1, 3, 20)))]
                if rng.random() < 0.75:
                    self.rolled_back.update(r.id for r in records)
                    try:
                        with store.atomic():
                            results = store.append_events(records)
                            self.rolled_back_positions.update(r.position for r in results)
                            time.sleep(rng.uniform(0, 0.004))  # hold the write lock and the positions a moment
                            raise RolledBack
                    except RolledBack:
                        self.stats["rolled-back transactions"] += 1
                else:
                    for r in store.append_events(records):
                        self.committed[r.id] = r.position
                    self.stats["direct commits"] += 1
                time.sleep(rng.uniform(0.002, 0.02))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"direct writer failed: {exc!r}")
        finally:
            store.close()

    def pick(self, sub: Subscriber, rng: random.Random) -> Replica | None:
        up = [r for r in self.replicas if r.up]
        if not up:
            return None
        current = self.replicas[sub.replica]
        if current.up and rng.random() >= SWITCH_REPLICA:
            return current
        chosen = rng.choice(up)
        sub.replica = chosen.index
        return chosen

    async def subscriber(self, sub: Subscriber, rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        sub.last = sub.start
        while not (self.target is not None and sub.last >= self.target):
            replica = self.pick(sub, rng)
            if replica is None:
                await asyncio.sleep(0.05)
                continue
            generation, after, first = replica.generation, sub.last, len(sub.received)
            call = replica.stub.StreamEvents(pb.StreamEventsRequest(
                after_position=after, max_batch_size=sub.batch, event_type=sub.event_type))
            hung_up = []

            def hang_up(call=call, hung_up=hung_up) -> None:
                hung_up.append(True)
                call.cancel()

            timer = loop.call_later(rng.expovariate(1 / MEAN_STREAM_SECONDS), hang_up)
            end = "ended by the server"
            replica.streams += 1
            try:
                async for message in call:
                    kind = message.WhichOneof("item")
                    if kind == "checkpoint":
                        position = message.checkpoint.position
                        if position < sub.last or (position != sub.last and not sub.event_type):
                            # Unfiltered, everything up to a checkpoint's position has been sent:
                            # it is the last event's. Filtered, it may be beyond (never before).
                            sub.anomalies.append(
                                f"checkpoint at {position} after the last event received was {sub.last} "
                                f"(replica {replica.index} gen {generation}, after_position={after})")
                        elif sub.event_type and position > sub.last:
                            # Resume from here: any matching event up to it must have been sent.
                            sub.last = position
                            if self.target is not None and sub.last >= self.target:
                                end = "done"
                                break
                        continue
                    if kind == "event":
                        events = [message.event]
                        if sub.batch:
                            sub.anomalies.append(f"an `event` message on a batched stream (replica {replica.index})")
                    else:
                        events = message.batch.events
                        if not sub.batch or not 0 < len(events) <= sub.batch:
                            sub.anomalies.append(f"a batch of {len(events)} events on a stream of max_batch_size "
                                                 f"{sub.batch} (replica {replica.index})")
                    for event in events:
                        if sub.event_type and event.type != sub.event_type:
                            sub.anomalies.append(f"a {event.type} event at {event.position} on a stream of "
                                                 f"{sub.event_type} only (replica {replica.index})")
                        sub.received.append((event.position, event.id))
                        sub.last = max(sub.last, event.position)
                    if self.target is not None and sub.last >= self.target:
                        end = "done"
                        break
            except asyncio.CancelledError:
                if not hung_up or asyncio.current_task().cancelling():
                    raise
                end = "hung up"
            except grpc.aio.AioRpcError as error:
                if hung_up and error.code() == grpc.StatusCode.CANCELLED:
                    end = "hung up"
                elif generation in replica.killed:
                    end = f"replica killed ({error.code().name})"
                    sub.failovers += 1
                else:
                    end = f"{error.code().name}: {error.details()}"
                    self.errors.append(f"{sub.name}: StreamEvents on replica {replica.index} gen {generation} "
                                       f"after_position={after}: {end}")
                    await asyncio.sleep(0.1)
            finally:
                timer.cancel()
                call.cancel()
                if replica.generation == generation:
                    replica.streams -= 1
                sub.connections.append((replica.index, generation, after, first, len(sub.received) - first, end))
            self.stats["stream connections"] += 1
        sub.finished = True

    async def chaos(self, rng: random.Random, load_seconds: float) -> None:
        """Kill a replica every KILL_EVERY seconds, mid-publish, and restart it."""
        interval = KILL_EVERY
        began = time.monotonic()
        next_kill = began + 0.6 * interval
        victim = rng.randrange(REPLICAS)
        while next_kill < began + load_seconds - 2:
            await asyncio.sleep(max(0.0, next_kill - time.monotonic()))
            next_kill += interval
            replica = self.replicas[victim]
            victim = (victim + rng.randrange(1, REPLICAS)) % REPLICAS
            # Wait (a little) until calls are in flight and streams open on it.
            deadline = time.monotonic() + 2
            while (replica.inflight < 2 or replica.streams < 1) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            self.stats["publishes in flight at kills"] += replica.inflight
            self.stats["streams open at kills"] += replica.streams
            await replica.kill()
            self.stats["kills"] += 1
            await asyncio.sleep(1.0 if rng.random() < 0.5 else 0.2)
            restarting = time.monotonic()
            await replica.start()
            self.stats["slowest restart (s)"] = max(self.stats["slowest restart (s)"],
                                                   round(time.monotonic() - restarting, 1))

    # -- the run ---------------------------------------------------------

    async def run(self, load_seconds: float) -> list[tuple[int, str]]:
        rng = self.rng
        starting = time.monotonic()
        await asyncio.gather(*(r.start() for r in self.replicas))
        self.stats["startup (s)"] = round(time.monotonic() - starting, 1)
        threads = [threading.Thread(target=self.direct_writer, args=(random.Random(rng.random()),),
                                    name=f"direct-{n}", daemon=True) for n in range(DIRECT_WRITERS)]
        for thread in threads:
            thread.start()
        publishers = [asyncio.create_task(self.publisher(r, random.Random(rng.random())))
                      for r in self.replicas for _ in range(PUBLISHERS_PER_REPLICA)]
        chaos = asyncio.create_task(self.chaos(random.Random(rng.random()), load_seconds))
        subscribers = []
        began = time.monotonic()
        # The first subscriber of each replica reads the whole log; the others join
        # later, after a position some publisher had acknowledged by then.
        for n, (batch, event_type) in enumerate(SUBSCRIBERS):
            for replica in self.replicas:
                if n:
                    await asyncio.sleep(rng.uniform(0, load_seconds / (2 * REPLICAS * len(SUBSCRIBERS))))
                positions = [p for p, _ in list(self.acked.values())]
                start = rng.choice(positions) if n and positions else 0
                while not replica.up:
                    await asyncio.sleep(0.05)
                sub = Subscriber(name=f"subscriber {len(self.subscribers)}", batch=batch, event_type=event_type,
                                 start=start, replica=replica.index)
                self.subscribers.append(sub)
                subscribers.append(asyncio.create_task(self.subscriber(sub, random.Random(rng.random()))))
        await asyncio.sleep(max(0.0, load_seconds - (time.monotonic() - began)))

        self.stop_publishing = True
        self.stop_direct.set()
        stopping = time.monotonic()
        await asyncio.gather(*publishers)
        self.stats["slowest acknowledged publish (s)"] = round(self.slowest_publish, 1)
        self.stats["stopping publishers (s)"] = round(time.monotonic() - stopping, 1)
        for thread in threads:
            await asyncio.to_thread(thread.join, 60)
        await chaos  # a restart under way
        self.stats["stopping the load (s)"] = round(time.monotonic() - stopping, 1)
        log, self.types = read_log(self.url)
        self.target = log[-1][0] if log else 0
        self.stats["log length"] = len(log)

        caught_up = time.monotonic()
        done, pending = await asyncio.wait(subscribers, timeout=CATCH_UP_SECONDS)
        self.stats["subscribers' catch-up (s)"] = round(time.monotonic() - caught_up, 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                self.errors.append(f"a subscriber failed: {task.exception()!r}")
        return log

    async def listings(self) -> dict[int, list[tuple[int, str]]]:
        """The log as each replica's ListEvents gives it."""
        result = {}
        for replica in self.replicas:
            events, token = [], ""
            while True:
                page = await replica.stub.ListEvents(pb.ListEventsRequest(page_size=1000, page_token=token),
                                                     timeout=60)
                events += [(e.position, e.id) for e in page.events]
                token = page.next_page_token
                if not token:
                    break
            result[replica.index] = events
        return result


def read_log(url: str) -> tuple[list[tuple[int, str]], dict[int, str]]:
    """The log as (position, id) in position order, and each position's event type."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT position, id, type FROM events ORDER BY position").fetchall()
    return [(p, i) for p, i, _ in rows], {p: ty for p, _, ty in rows}


def ranges(positions) -> str:
    """1,2,3,7,9,10 as '1-3, 7, 9-10' (the first few runs)."""
    runs: list[list[int]] = []
    for p in sorted(positions):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:12])
    return text + (f", ... ({len(runs)} runs)" if len(runs) > 12 else "")


def check_log(t: Torture, log: list[tuple[int, str]]) -> list[str]:
    failures = []
    positions = [p for p, _ in log]
    if positions != list(range(1, len(log) + 1)):
        failures.append(f"the log's positions are not 1..{len(log)}: missing "
                        f"{ranges(set(range(1, len(log) + 1)) - set(positions))}")
    at: dict[str, list[int]] = {}
    for position, event_id in log:
        at.setdefault(event_id, []).append(position)
    twice = {i: p for i, p in at.items() if len(p) > 1}
    if twice:
        failures.append(f"{len(twice)} ids logged more than once, e.g. {list(twice.items())[:5]}")
    lost = [(i, p, r) for i, (p, r) in t.acked.items() if i not in at]
    if lost:
        failures.append(f"{len(lost)} acknowledged events are not in the log, e.g. (id, position, replica) "
                        f"{lost[:5]}; their positions: {ranges(p for _, p, _ in lost)}")
    moved = [(i, p, at[i]) for i, (p, _) in t.acked.items() if i in at and at[i] != [p]]
    if moved:
        failures.append(f"{len(moved)} acknowledged events are logged elsewhere, e.g. (id, acknowledged, logged) "
                        f"{moved[:5]}")
    lost = [(i, p) for i, p in t.committed.items() if at.get(i) != [p]]
    if lost:
        failures.append(f"{len(lost)} committed direct appends are not at their position, e.g. "
                        f"{[(i, p, at.get(i)) for i, p in lost[:5]]}")
    back = [(i, at[i]) for i in t.rolled_back if i in at]
    if back:
        failures.append(f"{len(back)} events of rolled-back transactions are in the log, e.g. {back[:5]}")
    phantoms = [(p, i) for p, i in log if i not in t.sent and i not in t.committed and i not in t.rolled_back]
    if phantoms:
        failures.append(f"{len(phantoms)} logged events nobody sent, e.g. {phantoms[:5]}")
    return failures


def check_subscriber(sub: Subscriber, log: list[tuple[int, str]], types: dict[int, str]) -> list[str]:
    failures = [f"{sub.name}: {a}" for a in sub.anomalies[:5]]
    if len(sub.anomalies) > 5:
        failures.append(f"{sub.name}: ... {len(sub.anomalies)} anomalies in all")
    expected = [(p, i) for p, i in log if p > sub.start and (not sub.event_type or types[p] == sub.event_type)]
    got = sub.received
    if got == expected:
        return failures
    describe = (f"{sub.name} (max_batch_size={sub.batch}, event_type={sub.event_type!r}, "
                f"from after_position={sub.start}, {len(sub.connections)} connections)")
    # Where it first diverges, and on which connection.
    index = next((n for n, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    near = f"first difference at index {index}: received {got[index:index + 3]} expected " \
           f"{expected[index:index + 3]}"
    if index < len(got):
        near += f", delivered by {sub.connection_of(index)}"
    if index:
        near += f"; the event before came by {sub.connection_of(index - 1)}"
    counts = Counter(got)
    duplicated = [entry for entry, n in counts.items() if n > 1]
    logged = set(expected)
    missing = [entry for entry in expected if entry not in counts]
    foreign = [entry for entry in got if entry not in logged]
    disorder = [n for n in range(1, len(got)) if got[n][0] <= got[n - 1][0]]
    parts = [near]
    if missing:
        parts.append(f"{len(missing)} events of the log never received: positions {ranges(p for p, _ in missing)}")
    if duplicated:
        parts.append(f"{len(duplicated)} received more than once: positions {ranges(p for p, _ in duplicated)}")
    if foreign:
        parts.append(f"{len(foreign)} received that the log does not hold (at those positions or after the start): "
                     f"{foreign[:5]}")
    if disorder:
        parts.append(f"{len(disorder)} times a position not above the previous one, first at index {disorder[0]}: "
                     f"{got[disorder[0] - 1:disorder[0] + 1]} (by {sub.connection_of(disorder[0])})")
    failures.append(f"{describe}: " + "; ".join(parts))
    return failures


@pytest.mark.timeout(int(LOAD_SECONDS * 3 + CATCH_UP_SECONDS + 120))
def test_replicas_survive_kills_rollbacks_and_reconnects_without_loss_or_duplicates(postgres_url, tmp_path):
    rng = random.Random(SEED)
    t = Torture(postgres_url, tmp_path, rng)
    began = time.monotonic()

    async def main():
        try:
            log = await t.run(LOAD_SECONDS)
            listings = await t.listings()
            return log, listings
        finally:
            t.stop_direct.set()
            for replica in t.replicas:
                await replica.stop()

    log, listings = asyncio.run(main())
    t.stats["wall (s)"] = round(time.monotonic() - began, 1)
    t.stats["acknowledged events"] = len(t.acked)
    t.stats["positions taken by rollbacks, then reused"] = len(t.rolled_back_positions & {p for p, _ in log})
    t.stats["subscriber failovers"] = sum(s.failovers for s in t.subscribers)
    t.stats["events delivered to subscribers"] = sum(len(s.received) for s in t.subscribers)
    print(f"\nreplica torture (POET_TORTURE_SEED={SEED}): " + ", ".join(f"{k}: {v}" for k, v in t.stats.items()))

    failures = [f"unexplained error: {e}" for e in t.errors[:10]]
    if len(t.errors) > 10:
        failures.append(f"... {len(t.errors)} unexplained errors in all")
    laggards = [f"{s.name} (event_type={s.event_type!r}) at {s.last} on replica {s.replica}, "
                f"{len(s.connections)} connections, the last: {s.connections[-1:]}"
                for s in t.subscribers if not s.finished]
    if laggards:
        failures.append(f"within {CATCH_UP_SECONDS:g} s of the end of publishing, these subscribers had not reached "
                        f"the log's last position {t.target}: " + "; ".join(laggards))
    failures += check_log(t, log)
    for sub in t.subscribers:
        failures += check_subscriber(sub, log, t.types)
    for index, listed in listings.items():
        if listed != log:
            diverge = next((n for n, (a, b) in enumerate(zip(listed, log)) if a != b), min(len(listed), len(log)))
            failures.append(f"ListEvents on replica {index} gives another log ({len(listed)} events, the table "
                            f"{len(log)}): first difference at index {diverge}: {listed[diverge:diverge + 3]} vs "
                            f"{log[diverge:diverge + 3]}")
    if failures:
        logs = "\n".join(f"--- {r}: {r.log_path}\n{log_tail(r.log_path, 1500)}" for r in t.replicas if r.log_path)
        pytest.fail(f"POET_TORTURE_SEED={SEED}\n" + "\n".join(failures) + f"\nreplica output:\n{logs}",
                    pytrace=False)

    # The torture really happened.
    assert t.stats["kills"] >= 1 and t.stats["rolled-back transactions"] > 0 and t.stats["direct commits"] > 0
    assert len(t.acked) > 0 and t.stats["stream connections"] > len(t.subscribers)
    assert t.stats["subscriber failovers"] >= 1, "no subscriber was on a replica when it was killed"
    assert {r for _, r in t.acked.values()} == set(range(REPLICAS))
