"""Benchmarks of the event log (seed 002 quality gates); prints a table.

    .venv/bin/python bench/events.py [--repeats 3] [--events 40000] [--subscribers 100]

Starts `poet-grpc serve --no-gateway` as its own process on a fresh SQLite file
(synchronous=FULL: every acknowledged event is fsynced) and drives it over gRPC
from this process (publishers and subscribers share this one client process, so
client CPU counts against the 2 cores too). Medians over --repeats runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402
from _support import Server, percentile  # noqa: E402

OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def _event(i: int, kind: str = "bench.tick") -> events_pb2.Event:
    event = events_pb2.Event(id=str(uuid.uuid4()), type=kind, function_name="bench")
    event.payload.update({"n": i, "model_name": "churn", "drift_score": 0.42})
    return event


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def caught_up(call) -> None:
    async for item in call:
        if item.HasField("checkpoint") and item.checkpoint.caught_up:
            return


async def publish_batched(stub, total: int, batch: int = 500, callers: int = 4) -> float:
    """Events/s durably appended through PublishEvents batches, `callers` at once.
    Each run appends to the log the earlier runs left: the log grows as the bench goes."""
    requests = [pb.PublishEventsRequest(events=[_event(i) for i in range(s, min(total, s + batch))])
                for s in range(0, total, batch)]
    started = time.perf_counter()

    async def worker():
        while requests:
            await stub.PublishEvents(requests.pop())

    await asyncio.gather(*(worker() for _ in range(callers)))
    return total / (time.perf_counter() - started)


def received(item: pb.StreamEventsResponse) -> int:
    """Events in one stream message."""
    if item.HasField("event"):
        return 1
    return len(item.batch.events) if item.HasField("batch") else 0


async def subscribers_receive(stub, n: int, total: int, batch: int) -> tuple[float, list[int], float, float, float]:
    """n live subscribers (max_batch_size=batch) while `total` events are published
    in batches: (events/s each subscriber received, counts received, seconds until
    all had everything, events/s published meanwhile, median ms from the last
    publish ack to a subscriber's last event)."""
    calls = [stub.StreamEvents(pb.StreamEventsRequest(live_only=True, max_batch_size=batch)) for _ in range(n)]
    await asyncio.gather(*(caught_up(c) for c in calls))
    counts = [0] * n
    firsts: list[float] = [0.0] * n
    lasts: list[float] = [0.0] * n

    async def read(i, call):
        async for item in call:
            if got := received(item):
                if counts[i] == 0:
                    firsts[i] = time.perf_counter()
                counts[i] += got
                if counts[i] >= total:
                    lasts[i] = time.perf_counter()
                    return

    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(calls)]
    started = time.perf_counter()
    published = await publish_batched(stub, total)
    acked = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*readers), timeout=300)
    except TimeoutError:
        pass
    finished = time.perf_counter() - started
    for c in calls:
        c.cancel()
    rates = [total / (lasts[i] - started) for i in range(n) if lasts[i]]
    lags = [(lasts[i] - acked) * 1000 for i in range(n) if lasts[i]]
    return (statistics.median(rates) if rates else 0.0), counts, finished, published, statistics.median(lags or [0.0])


async def read_rate(stub, after_position: int, count: int, batch: int) -> float:
    """Events/s one subscriber reads, `count` events from after_position on."""
    got = 0
    started = time.perf_counter()
    call = stub.StreamEvents(pb.StreamEventsRequest(after_position=after_position, max_batch_size=batch))
    async for item in call:
        got += received(item)
        if got >= count:
            break
    call.cancel()
    return count / (time.perf_counter() - started)


async def tail_read_rate(stub, count: int, batch: int) -> float:
    """read_rate of the last `count` events of the log: those are still in the
    server's in-memory tail (count <= 10,000)."""
    last = (await stub.PublishEvents(pb.PublishEventsRequest(events=[_event(0, "bench.marker")]))).results[0].position
    return await read_rate(stub, last - count, count, batch)


async def paced_latency(stub, rate: int, seconds: float) -> tuple[list[float], list[float]]:
    """Publish `rate` single-event calls per second; (ack ms, publish-to-delivery ms)."""
    sent: dict[str, float] = {}
    acks: list[float] = []
    delivery: list[float] = []
    total = int(rate * seconds)
    call = stub.StreamEvents(pb.StreamEventsRequest(live_only=True, event_type="bench.paced*"))
    await caught_up(call)

    async def read():
        async for item in call:
            if item.HasField("event"):
                delivery.append((time.perf_counter() - sent[item.event.id]) * 1000)
                if len(delivery) == total:
                    return

    reader = asyncio.create_task(read())

    async def one(i):
        event = _event(i, "bench.paced")
        started = time.perf_counter()
        sent[event.id] = started
        await stub.PublishEvents(pb.PublishEventsRequest(events=[event]))
        acks.append((time.perf_counter() - started) * 1000)

    tasks = []
    t0 = time.perf_counter()
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    await asyncio.wait_for(reader, 30)
    call.cancel()
    return acks, delivery


async def measure(stub, server, args) -> list[tuple[str, str, str]]:
    rows = []
    med = statistics.median
    batched = [await publish_batched(stub, args.events) for _ in range(args.repeats)]
    rows.append((f"publish, PublishEvents batches of 500, 4 callers ({args.events} events, FULL)",
                 f"{med(batched):8.0f} events/s (slowest {min(batched):.0f})", ">= 20000 (gate 10000)"))
    for batch, label in ((500, "max_batch_size=500"), (0, "one event per message")):
        one = [await subscribers_receive(stub, 1, args.events, batch) for _ in range(args.repeats)]
        assert all(counts == [args.events] for _, counts, *_ in one), "a subscriber missed events"
        rows.append((f"1 live subscriber ({label}) while {args.events} are published",
                     f"{med(r[0] for r in one):8.0f} events/s (published {med(r[3] for r in one):.0f}/s, "
                     f"last event {med(r[4] for r in one):.0f} ms after the last ack)",
                     "keeps up with the publisher"))
    tail = [await tail_read_rate(stub, 10_000, 500) for _ in range(args.repeats)]
    rows.append(("1 subscriber reading the last 10000 events (in-memory tail, max_batch_size=500)",
                 f"{med(tail):8.0f} events/s", ">= 20000 (gate 20000)"))
    backlog = [await read_rate(stub, 0, args.events, 500) for _ in range(args.repeats)]
    rows.append((f"1 subscriber reading {args.events} events from the start of the log (SQLite, max_batch_size=500)",
                 f"{med(backlog):8.0f} events/s", ">= 20000 (gate 20000)"))
    many_total = args.many_events
    fan = []
    rss = []
    for _ in range(args.repeats):
        rate, counts, seconds, _, _ = await subscribers_receive(stub, args.subscribers, many_total, 0)
        fan.append((rate, counts, seconds))
        rss.append(rss_mb(server.process.pid))
    complete = sum(1 for _, counts, _ in fan for c in counts if c == many_total)
    rows.append((f"{args.subscribers} live subscribers (one event per message), {many_total} events published",
                 f"{complete}/{args.subscribers * args.repeats} got all; {med(s for _, _, s in fan):.2f} s; "
                 f"{med(r for r, _, _ in fan):.0f} ev/s each", "each receives every event"))
    paced = [await paced_latency(stub, 1000, args.paced_seconds) for _ in range(args.repeats)]
    rows.append(("publish-ack at 1000 events/s (1 event/call)",
                 f"p50 {med(percentile(a, .5) for a, _ in paced):5.1f} ms  p95 {med(percentile(a, .95) for a, _ in paced):5.1f} ms",
                 "p95 < 20 ms (gate 100)"))
    rows.append(("publish-to-delivery at 1000 events/s",
                 f"p50 {med(percentile(d, .5) for _, d in paced):5.1f} ms  p95 {med(percentile(d, .95) for _, d in paced):5.1f} ms",
                 "p95 < 50 ms (gate 200)"))
    rows.append((f"server RSS with {args.subscribers} subscribers", f"{max(rss):8.0f} MB (max)", "< 300 MB"))
    return rows


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            async with grpc.aio.insecure_channel(server.address, options=OPTIONS) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                rows = await measure(stub, server, args)
        finally:
            server.stop()
    print(f"\nPOET event log bench: {os.cpu_count()} cores, medians of {args.repeats} runs, SQLite synchronous=FULL\n")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"{'measure'.ljust(w0)} | {'value'.ljust(w1)} | target")
    print(f"{'-' * w0}-|-{'-' * w1}-|-{'-' * 24}")
    for name, value, target in rows:
        print(f"{name.ljust(w0)} | {value.ljust(w1)} | {target}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--events", type=int, default=40000, help="events per throughput run")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--many-events", type=int, default=5000, help="events published to the many subscribers")
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args()))
