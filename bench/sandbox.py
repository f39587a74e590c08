"""Benchmark of the gate's code sandbox (warm worker processes); prints a table.

    .venv/bin/python bench/sandbox.py [--repeats 3] [--quick]
        [--baseline-rate 34] [--baseline-start-ms 22] [--baseline-tree DIR]

--baseline-tree DIR measures the old design in the same run: DIR is a checkout of
an earlier commit (e.g. `git worktree add /tmp/poet-old <commit>`), whose server
is started the same way from DIR (its working directory and first on PYTHONPATH).

Starts `poet-grpc serve --no-gateway` as its own process on a fresh SQLite file
and drives it over gRPC from this process (the client's CPU counts against the
same cores). The machine is shared and noisy, so the references are measured in
the same run, interleaved with the Enhance runs, and the targets are ratios to
them:

- the start of a bare `<server's python> -I -c pass` (wall clock of subprocess.run);
- a no-op unary RPC (grpc.health.v1.Health/Check) at concurrency 1.

Every Enhance call is a new distinct small function (nothing is served from the
idempotency cache). Concurrent workers each send their own x-client-id, so the
per-caller fair share (half the generator workers) does not serialize them.

The fairness case: caller "slow" sends calls whose module sleeps at import (the
gate imports the original and the generated module, so each of them sleeps
twice) all at once; while they are in flight, caller "normal" sends normal calls
one after another. Its latency is compared with the same calls without the slow
traffic, measured just before in the same run.

Latency rows are medians over --repeats runs; the fairness case runs once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402
from _support import FUNCTION, Server, percentile  # noqa: E402


SLOW_FUNCTION = '''
import time

time.sleep({sleep})


def slow_{n}(values: list) -> float:
    """Mean of values, from a module that is slow to import ({n})."""
    if not values:
        return 0.0
    return sum(values) / len(values)
'''

CALL_TIMEOUT = 120.0
STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def interpreter_start_ms(runs: int) -> list[float]:
    """Wall clock (ms) of subprocess.run of a bare `<python> -I -c pass`."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def health_latency(health, total: int) -> list[float]:
    """Latency (ms) of `total` Health/Check calls, one at a time."""
    samples = []
    request = health_pb2.HealthCheckRequest()
    for _ in range(total):
        started = time.perf_counter()
        await health.Check(request, timeout=CALL_TIMEOUT)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


class Counter:
    """Distinct function numbers across the whole run."""

    def __init__(self):
        self.n = 0

    def take(self, count: int) -> list[int]:
        numbers = list(range(self.n, self.n + count))
        self.n += count
        return numbers


async def enhance_one(stub, n: int, client: str, code: str | None = None, name: str | None = None) -> float:
    """One Enhance of a new function; its latency in ms (raises on failure)."""
    started = time.perf_counter()
    await stub.Enhance(
        pb.EnhanceRequest(function_name=name or f"score_{n}", original_code=code or FUNCTION.format(n=n)),
        metadata=(("x-client-id", client),),
        timeout=CALL_TIMEOUT,
    )
    return (time.perf_counter() - started) * 1000


async def enhance_run(stub, numbers: list[int], concurrency: int, tag: str) -> tuple[list[float], float, int]:
    """Enhance every number's function, `concurrency` workers at once, each worker
    its own x-client-id: (latencies in ms, calls/s, failures)."""
    samples: list[float] = []
    failures = [0]
    queue = list(numbers)

    async def worker(w: int):
        client = f"bench-{tag}-w{w}"
        while queue:
            n = queue.pop()
            try:
                samples.append(await enhance_one(stub, n, client))
            except grpc.aio.AioRpcError as exc:
                failures[0] += 1
                log(f"  Enhance failed ({client}): {exc.code().name}: {exc.details()[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return samples, len(numbers) / (time.perf_counter() - started), failures[0]


async def sequential(stub, numbers: list[int], client: str) -> tuple[list[float], float]:
    """Normal Enhance calls one after another as `client`: (latencies in ms, time of the last end)."""
    samples = []
    for n in numbers:
        samples.append(await enhance_one(stub, n, client))
    return samples, time.perf_counter()


async def fairness(stub, counter: Counter, slow_calls: int, sleep: float, normal_calls: int) -> dict:
    """Caller "slow" sends slow_calls slow-importing functions at once; while they
    are in flight caller "normal" sends normal_calls calls one after another."""
    log(f"fairness: caller 'normal', {normal_calls} calls without slow traffic")
    quiet, _ = await sequential(stub, counter.take(normal_calls), "normal")
    log(f"fairness: caller 'slow' sends {slow_calls} calls sleeping {sleep:g} s at import, at once")
    slow_ends: list[float] = []
    slow_latencies: list[float] = []
    slow_failures: list[str] = []

    async def slow(n: int):
        code = SLOW_FUNCTION.format(n=n, sleep=sleep)
        try:
            slow_latencies.append(await enhance_one(stub, n, "slow", code=code, name=f"slow_{n}"))
        except grpc.aio.AioRpcError as exc:
            slow_failures.append(f"{exc.code().name}: {exc.details()[:200]}")
        slow_ends.append(time.perf_counter())

    started = time.perf_counter()
    slow_tasks = [asyncio.create_task(slow(n)) for n in counter.take(slow_calls)]
    await asyncio.sleep(0.5)  # let the slow calls take their slots and start their gate checks
    in_flight_at_start = sum(not t.done() for t in slow_tasks)
    log(f"fairness: caller 'normal' sends {normal_calls} calls one after another ({in_flight_at_start} slow in flight)")
    loaded, normal_end = await sequential(stub, counter.take(normal_calls), "normal")
    in_flight_at_end = sum(not t.done() for t in slow_tasks)
    await asyncio.gather(*slow_tasks)
    for failure in slow_failures:
        log(f"  slow Enhance failed: {failure}")
    return {
        "quiet": quiet, "loaded": loaded, "slow_total": max(slow_ends) - started, "slow_latencies": slow_latencies,
        "slow_failures": len(slow_failures), "in_flight_at_start": in_flight_at_start,
        "in_flight_at_end": in_flight_at_end, "normal_span": normal_end - started,
    }


def read_output(server: Server, lines: list[str], sandbox_line: threading.Event) -> None:
    """Drains the server's output (so its pipe never fills), noting the sandbox line."""
    for line in server.process.stdout:
        lines.append(line.rstrip("\n"))
        if "code sandbox:" in line:
            sandbox_line.set()


async def baseline(args) -> tuple[float, float]:
    """(Enhance p50 at concurrency 1, Enhance/s at concurrency 32) of the server in
    --baseline-tree, medians over --repeats runs."""
    env = {"POET_GATE_TIMEOUT_SECONDS": str(args.gate_timeout),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(args.baseline_tree).resolve()), os.environ.get("PYTHONPATH")]))}
    q = args.quick
    with tempfile.TemporaryDirectory() as tmp:
        log(f"starting the old design's server from {args.baseline_tree}")
        server = Server(Path(tmp), env=env, cwd=Path(args.baseline_tree).resolve())
        threading.Thread(target=read_output, args=(server, [], threading.Event()), daemon=True).start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                counter = Counter()
                await enhance_run(stub, counter.take(16), 4, "old-warmup")
                p50s, rates = [], []
                for r in range(args.repeats):
                    log(f"old design run {r + 1}/{args.repeats}")
                    samples, _, _ = await enhance_run(stub, counter.take(10 if q else 30), 1, f"old-r{r}c1")
                    p50s.append(percentile(samples, 0.5) if samples else float("nan"))
                    _, rate, _ = await enhance_run(stub, counter.take(64 if q else 192), 32, f"old-r{r}c32")
                    rates.append(rate)
        finally:
            server.stop()
    return statistics.median(p50s), statistics.median(rates)


async def main(args) -> None:
    started = time.perf_counter()
    env = {"POET_GATE_TIMEOUT_SECONDS": str(args.gate_timeout)}
    output: list[str] = []
    sandbox_seen = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        log(f"starting poet-grpc serve ({sys.executable}), {' '.join(f'{k}={v}' for k, v in env.items())}")
        server = Server(Path(tmp), env=env)
        output.extend(server.startup_lines)
        threading.Thread(target=read_output, args=(server, output, sandbox_seen), daemon=True).start()
        sandbox_seen.wait(timeout=10)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                rows = await measure(channel, args)
        finally:
            server.stop()
    if args.baseline_tree:
        old_c1, old_rate = await baseline(args)
        new_c1 = float(next(r[1] for r in rows if r[0].startswith("Enhance, concurrency 1 ")).split()[1])
        new_rate = float(next(r[1] for r in rows if r[0].startswith("Enhance throughput")).split()[0])
        rows += [
            (f"old design, same run ({args.baseline_tree}): Enhance p50 at concurrency 1", f"{old_c1:7.1f} ms", "reference"),
            ("old design, same run: Enhance throughput at concurrency 32", f"{old_rate:7.1f} Enhance/s", "reference"),
            ("Enhance p50 at concurrency 1: old design / now", f"{old_c1 / new_c1:7.2f}x", "-"),
            ("Enhance throughput at concurrency 32: now / old design (same run)", f"{new_rate / old_rate:7.2f}x", ">= 3x"),
        ]
    elapsed = time.perf_counter() - started
    sandbox = [line for line in output if "code sandbox:" in line]
    print(f"\nPOET sandbox bench: {os.cpu_count()} cores, medians of {args.repeats} runs{' (--quick)' if args.quick else ''}, "
          f"server python {sys.executable}")
    print(f"server: {sandbox[0] if sandbox else '(no code sandbox line printed)'}\n")
    widths = [max(len(r[i]) for r in rows + [("measure", "value", "target")]) for i in range(3)]
    print(f"{'measure'.ljust(widths[0])} | {'value'.ljust(widths[1])} | target")
    print(f"{'-' * widths[0]}-|-{'-' * widths[1]}-|-{'-' * widths[2]}")
    for name, value, target in rows:
        print(f"{name.ljust(widths[0])} | {value.ljust(widths[1])} | {target}")
    print(f"\ntook {elapsed:.0f} s")


async def measure(channel, args) -> list[tuple[str, str, str]]:
    stub = poet_service_pb2_grpc.PoetServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    counter = Counter()
    q = args.quick
    start_runs = 10 if q else 20
    health_calls = 100 if q else 300
    plan = [(1, 10 if q else 30), (10, 30 if q else 100), (100, 100 if q else 200)]
    rate_concurrency, rate_calls = 32, (64 if q else 192)

    log("warm-up: first Enhance after start, then 4 callers at once")
    first = await enhance_one(stub, counter.take(1)[0], "bench-warmup")
    await enhance_run(stub, counter.take(16), 4, "warmup")
    await health_latency(health, 20)
    interpreter_start_ms(3)

    starts, h50, h95 = [], [], []
    latency: dict[int, tuple[list, list, list]] = {c: ([], [], []) for c, _ in plan}
    rates32: list[float] = []
    failures = 0
    for r in range(args.repeats):
        log(f"run {r + 1}/{args.repeats}: interpreter start x{start_runs}")
        starts.append(statistics.median(interpreter_start_ms(start_runs)))
        log(f"run {r + 1}/{args.repeats}: Health/Check x{health_calls}")
        samples = await health_latency(health, health_calls)
        h50.append(percentile(samples, 0.5))
        h95.append(percentile(samples, 0.95))
        for concurrency, total in plan:
            log(f"run {r + 1}/{args.repeats}: Enhance x{total} at concurrency {concurrency}")
            samples, rate, failed = await enhance_run(stub, counter.take(total), concurrency, f"r{r}c{concurrency}")
            failures += failed
            if samples:
                latency[concurrency][0].append(percentile(samples, 0.5))
                latency[concurrency][1].append(percentile(samples, 0.95))
            latency[concurrency][2].append(rate)
        log(f"run {r + 1}/{args.repeats}: Enhance x{rate_calls} at concurrency {rate_concurrency} (throughput)")
        _, rate, failed = await enhance_run(stub, counter.take(rate_calls), rate_concurrency, f"r{r}c{rate_concurrency}")
        failures += failed
        rates32.append(rate)

    slow_calls, sleep, normal_calls = (4, 1.0, 5) if q else (args.slow_calls, args.slow_sleep, 10)
    fair = await fairness(stub, counter, slow_calls, sleep, normal_calls)

    med = statistics.median
    start = med(starts)
    rows = [
        (f"python -I -c pass start ({start_runs} runs, subprocess.run wall clock)", f"{start:7.1f} ms", "reference"),
        (f"Health/Check, concurrency 1 ({health_calls} calls)", f"p50 {med(h50):6.2f} ms  p95 {med(h95):6.2f} ms", "reference"),
        ("first Enhance after server start (1 run)", f"{first:7.1f} ms", "-"),
    ]
    for concurrency, total in plan:
        p50s, p95s, rates = latency[concurrency]
        callers = "1 caller" if concurrency == 1 else f"{concurrency} callers, own x-client-id each"
        rows.append((f"Enhance, concurrency {concurrency} ({total} new functions; {callers})",
                     f"p50 {med(p50s) if p50s else float('nan'):7.1f} ms  p95 {med(p95s) if p95s else float('nan'):7.1f} ms  "
                     f"{med(rates):6.1f}/s", "-"))
    rate32 = med(rates32)
    rows.append((f"Enhance throughput, concurrency {rate_concurrency} ({rate_calls} new functions; own x-client-id each)",
                 f"{rate32:7.1f} Enhance/s", "-"))
    if failures:
        rows.append(("Enhance calls that failed (see stderr)", f"{failures}", "0"))

    c1 = med(latency[1][0]) if latency[1][0] else float("nan")
    normalised = rate32 * start / 1000
    baseline = args.baseline_rate * args.baseline_start_ms / 1000
    rows += [
        ("Enhance p50 at concurrency 1 / interpreter start", f"{c1 / start:7.2f}", "< 1.0"),
        (f"Enhance/s at concurrency {rate_concurrency} x interpreter start (Enhances per start)", f"{normalised:7.2f}", "-"),
        (f"  old design: {args.baseline_rate:g}/s x {args.baseline_start_ms:g} ms (--baseline-rate/--baseline-start-ms)",
         f"{baseline:7.2f}", "reference"),
        ("  normalised throughput / old design", f"{normalised / baseline:7.2f}x", ">= 3x"),
    ]

    quiet, loaded = fair["quiet"], fair["loaded"]
    overlap = (f"{fair['in_flight_at_start']}/{slow_calls} slow in flight when B started, "
               f"{fair['in_flight_at_end']} when B ended")
    rows += [
        (f"fairness: B ('normal'), {normal_calls} calls one at a time, no slow traffic",
         f"p50 {percentile(quiet, 0.5):7.1f} ms  p95 {percentile(quiet, 0.95):7.1f} ms", "reference"),
        (f"fairness: B while A ('slow') runs {slow_calls} calls sleeping {sleep:g} s at import",
         f"p50 {percentile(loaded, 0.5):7.1f} ms  p95 {percentile(loaded, 0.95):7.1f} ms", "same order as without (was 24.6 s)"),
        ("fairness: B p50 under slow traffic / B p50 without",
         f"{percentile(loaded, 0.5) / percentile(quiet, 0.5):7.2f}", "~1 (same order)"),
        ("fairness: overlap", overlap, "B ends before A"),
        (f"fairness: A's total time ({slow_calls} calls at once, 2 imports x {sleep:g} s each)",
         f"{fair['slow_total']:7.1f} s  ({len(fair['slow_latencies'])} ok, {fair['slow_failures']} failed)", "-"),
    ]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per latency measurement; medians are reported")
    parser.add_argument("--quick", action="store_true", help="fewer calls and a shorter fairness case, for a smoke run")
    parser.add_argument("--baseline-rate", type=float, default=34.0, help="old design's Enhance/s (issue: 34 on 2 cores)")
    parser.add_argument("--baseline-start-ms", type=float, default=22.0,
                        help="interpreter start on the old design's machine, ms (issue: about 22)")
    parser.add_argument("--baseline-tree", default="", help="a checkout of the old design to measure in the same run")
    parser.add_argument("--slow-calls", type=int, default=8, help="caller A's slow calls in the fairness case")
    parser.add_argument("--slow-sleep", type=float, default=3.0, help="seconds each slow module sleeps at import")
    parser.add_argument("--gate-timeout", type=float, default=10.0, help="POET_GATE_TIMEOUT_SECONDS for the server")
    asyncio.run(main(parser.parse_args()))
