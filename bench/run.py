"""Benchmarks of the POET service; prints a table.

    .venv/bin/python bench/run.py [--repeats 3] [--events 20000]

Starts `poet-grpc serve --no-gateway` as its own process on a fresh SQLite file
(synchronous=FULL, the durable default) and drives it over gRPC from this
process. Reports medians over --repeats runs; the machine is shared and noisy,
so compare ratios and orders of magnitude, not single digits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import FUNCTION, Server, percentile  # noqa: E402



async def enhance_latency(stub, concurrency: int, total: int, offset: int) -> list[float]:
    """Latency (ms) of `total` Enhance calls of distinct functions, `concurrency` at a time."""
    samples: list[float] = []
    queue = list(range(offset, offset + total))

    async def worker():
        while queue:
            n = queue.pop()
            started = time.perf_counter()
            await stub.Enhance(pb.EnhanceRequest(function_name=f"score_{n}", original_code=FUNCTION.format(n=n)))
            samples.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def _event(i: int) -> events_pb2.Event:
    event = events_pb2.Event(type="bench.tick", function_name="bench")
    event.payload.update({"n": i})
    return event


async def publish_batched(stub, total: int, batch: int) -> float:
    """Events/s appended through PublishEvents batches, 4 callers at once."""
    batches = [[_event(i) for i in range(start, min(total, start + batch))] for start in range(0, total, batch)]
    started = time.perf_counter()

    async def worker():
        while batches:
            await stub.PublishEvents(pb.PublishEventsRequest(events=batches.pop()))

    await asyncio.gather(*(worker() for _ in range(4)))
    return total / (time.perf_counter() - started)


async def publish_single(stub, total: int, concurrency: int) -> tuple[float, list[float]]:
    """(events/s, ack latencies in ms) for one-event PublishEvents calls."""
    latencies: list[float] = []
    remaining = [total]

    async def worker():
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            await stub.PublishEvents(pb.PublishEventsRequest(events=[_event(0)]))
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


async def stream_backlog(stub, after: int, count: int) -> float:
    """Events/s one subscriber receives while reading `count` logged events."""
    received = 0
    started = time.perf_counter()
    call = stub.StreamEvents(pb.StreamEventsRequest(after_position=after))
    async for item in call:
        if item.HasField("event"):
            received += 1
            if received == count:
                break
    call.cancel()
    return count / (time.perf_counter() - started)


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                rows = await measure(stub, args)
        finally:
            server.stop()
    print(f"\nPOET bench: {os.cpu_count()} cores, medians of {args.repeats} runs, SQLite synchronous=FULL\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 24}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


async def measure(stub, args) -> list[tuple[str, str]]:
    rows = []
    offset = 0
    for concurrency, total in ((1, 30), (100, 200)):
        p50s, p95s, rates = [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            samples = await enhance_latency(stub, concurrency, total, offset)
            rates.append(total / (time.perf_counter() - started))
            offset += total
            p50s.append(percentile(samples, 0.5))
            p95s.append(percentile(samples, 0.95))
        rows.append((f"Enhance latency, concurrency {concurrency} ({total} new functions)",
                     f"p50 {statistics.median(p50s):7.1f} ms  p95 {statistics.median(p95s):7.1f} ms  ({statistics.median(rates):.0f}/s)"))
    batched = [await publish_batched(stub, args.events, 500) for _ in range(args.repeats)]
    rows.append((f"PublishEvents append, batches of 500 ({args.events} events)", f"{statistics.median(batched):9.0f} events/s"))
    singles = [await publish_single(stub, 2000, 10) for _ in range(args.repeats)]
    rows.append(("PublishEvents append, 1 event/call, 10 callers",
                 f"{statistics.median(r for r, _ in singles):9.0f} events/s  ack p50 "
                 f"{statistics.median(percentile(l, 0.5) for _, l in singles):.1f} ms  p95 "
                 f"{statistics.median(percentile(l, 0.95) for _, l in singles):.1f} ms"))
    streamed = [await stream_backlog(stub, 0, args.events) for _ in range(args.repeats)]
    rows.append((f"StreamEvents, one subscriber reading {args.events} logged events", f"{statistics.median(streamed):9.0f} events/s"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--events", type=int, default=20000, help="events per throughput run")
    asyncio.run(main(parser.parse_args()))
