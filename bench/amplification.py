"""Benchmark of amplification by heavy Enhance inputs: does the server stay responsive?

    .venv/bin/python bench/amplification.py [--seconds 40] [--quick] [--baseline-tree DIR]

Starts `poet-grpc serve --no-gateway` as its own process on a fresh SQLite file and
drives it over gRPC from this process (the client's CPU counts against the same
cores). First ListDomains, one call after another, on an idle server; then the same
while 4 callers (each its own x-client-id, so the fair share lets all 4 generate at
once) send Enhance calls of an attack input back to back, every call a new function
(nothing comes from the idempotency cache). Reports ListDomains p50/p99/max and
their ratios to the idle ones, the attack's Enhance rate and latency, how its calls
ended, the size of one enhanced module, and the peak resident memory of the server
and of its generator worker processes (all of them together).

Attack inputs:

- "max params": a function with POET_MAX_PARAMETERS (255) parameters, each annotated
  dict[str, list[tuple[int, float, str]]], enhanced with optimize_for "safety"
  (element and finiteness checks on): the most the generator makes of one function;
- "max params + padding": the same function in a module padded with plain functions
  to just under POET_MAX_CODE_BYTES (the most code one request may carry);
- "10,000 params": the reported attack's shape (10,000 int parameters, 116 KB; it
  became 3.3 MB of enhanced code before the limit), now refused.

--baseline-tree DIR also runs the 10,000-parameter attack against the server of an
earlier checkout (e.g. `git worktree add /tmp/poet-old <commit>`), started from DIR.
The machine is shared and noisy: compare the ratios, not single milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402
from poet_grpc.config import Settings  # noqa: E402
from _support import FUNCTION, Server, percentile  # noqa: E402

CALLERS = 4
CALL_TIMEOUT = 300.0
ANNOTATION = "dict[str, list[tuple[int, float, str]]]"
STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def wide_function(n: int, parameters: int, annotation: str = ANNOTATION) -> str:
    """A function attack_<n> with that many annotated parameters."""
    params = ", ".join(f"p{i}: {annotation}" for i in range(parameters))
    return f"def attack_{n}({params}) -> int:\n    return len(p0)\n"


def padded(n: int, parameters: int, limit: int) -> str:
    """wide_function(n) after plain functions, the whole just under limit bytes."""
    head = wide_function(n, parameters)
    filler, i = [], 0
    size = len(head.encode())
    while True:
        block = FUNCTION.format(n=f"{n}_{i}")
        if size + len(block) > limit - 64:
            break
        filler.append(block)
        size += len(block)
        i += 1
    return "".join(filler) + "\n" + head


ATTACKS = {
    "max params": lambda n, s: wide_function(n, s.max_parameters),
    "max params + padding": lambda n, s: padded(n, s.max_parameters, s.max_code_bytes),
    "10,000 params": lambda n, s: wide_function(n, 10_000, "int"),
}


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def generator_workers(pid: int) -> list[int]:
    """The server's generator worker processes."""
    found = []
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for cpid in child.read_text().split():
            try:
                if b"poet_grpc.generator._worker" in Path(f"/proc/{cpid}/cmdline").read_bytes():
                    found.append(int(cpid))
            except OSError:
                pass
    return found


class PeakRss:
    """Samples resident memory every 0.2 s: .peak of the server, .workers_peak of its
    generator workers together."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = rss_bytes(pid)
        self.workers_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.workers_peak = max(self.workers_peak, sum(rss_bytes(w) for w in generator_workers(self.pid)))

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak, self.workers_peak


async def list_domains(stub, until: float, samples: list[float]) -> None:
    """ListDomains one call after another until `until` (perf_counter), latencies in ms."""
    request = pb.ListDomainsRequest()
    while time.perf_counter() < until:
        started = time.perf_counter()
        await stub.ListDomains(request, timeout=CALL_TIMEOUT)
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)


async def attack(stub, make, seconds: float, counter: list[int]) -> dict:
    """CALLERS callers sending make(n) back to back for `seconds`, then ListDomains measured meanwhile."""
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    sizes: list[int] = []
    stop = time.perf_counter() + seconds

    async def caller(c: int) -> None:
        while time.perf_counter() < stop:
            counter[0] += 1
            n = counter[0]
            started = time.perf_counter()
            try:
                response = await stub.Enhance(
                    pb.EnhanceRequest(function_name=f"attack_{n}", original_code=make(n), optimize_for="safety"),
                    metadata=(("x-client-id", f"attacker-{c}"),), timeout=CALL_TIMEOUT,
                )
                outcomes["OK"] += 1
                sizes.append(len(response.enhanced_code.python.encode()))
            except grpc.aio.AioRpcError as exc:
                outcomes[exc.code().name] += 1
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT and outcomes[exc.code().name] == 1:
                    log(f"  Enhance failed: {exc.code().name}: {exc.details()[:200]}")
            latencies.append((time.perf_counter() - started) * 1000)

    callers = [asyncio.create_task(caller(c)) for c in range(CALLERS)]
    await asyncio.sleep(min(1.0, seconds / 10))  # let the callers start generating
    domains: list[float] = []
    await list_domains(stub, stop, domains)
    await asyncio.gather(*callers)
    return {"domains": domains, "enhance": latencies, "outcomes": outcomes, "sizes": sizes,
            "span": seconds}


async def run_server(env: dict[str, str], attacks: list[str], args, cwd: Path | None = None) -> list[dict]:
    """Idle ListDomains, then each attack, against one fresh server."""
    settings = Settings.from_env(env)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), env=env, cwd=cwd)
        threading.Thread(target=lambda: [None for _ in server.process.stdout], daemon=True).start()
        try:
            async with grpc.aio.insecure_channel(
                server.address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            ) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                await stub.Enhance(pb.EnhanceRequest(function_name="score_warm", original_code=FUNCTION.format(n="warm")))
                log("idle: ListDomains one after another")
                idle: list[float] = []
                await list_domains(stub, time.perf_counter() + args.idle_seconds, idle)
                pid = server.process.pid
                results.append({"name": "idle", "domains": idle, "rss": rss_bytes(pid),
                                "workers_rss": sum(rss_bytes(w) for w in generator_workers(pid))})
                counter = [0]
                for name in attacks:
                    log(f"attack {name!r}: {CALLERS} callers for {args.seconds:g} s, ListDomains meanwhile")
                    rss = PeakRss(server.process.pid)
                    result = await attack(stub, lambda n: ATTACKS[name](n, settings), args.seconds, counter)
                    peak, workers_peak = rss.stop()
                    result |= {"name": name, "rss": peak, "workers_rss": workers_peak,
                               "input": len(ATTACKS[name](0, settings).encode())}
                    results.append(result)
                    await asyncio.sleep(1.0)  # the last calls' cleanup, before the next attack
        finally:
            server.stop()
    return results


def rows_of(results: list[dict], label: str) -> list[tuple[str, ...]]:
    idle = results[0]["domains"]
    i50, i99 = percentile(idle, 0.5), percentile(idle, 0.99)
    rows = [(f"{label}idle", f"{i50:7.2f}", f"{i99:7.2f}", f"{max(idle):8.1f}", "1.0x / 1.0x", "-", "-", "-", "-",
             _memory(results[0]))]
    for r in results[1:]:
        d = r["domains"]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        enhance = f"{percentile(r['enhance'], 0.5) / 1000:6.2f} s" if r["enhance"] else "-"
        size = f"{max(r['sizes']) / 1024:6.0f} KB" if r["sizes"] else "-"
        rows.append((
            f"{label}{r['name']} ({r['input'] / 1024:.0f} KB)",
            f"{percentile(d, 0.5):7.2f}", f"{percentile(d, 0.99):7.2f}", f"{max(d):8.1f}",
            f"{percentile(d, 0.5) / i50:.1f}x / {percentile(d, 0.99) / i99:.1f}x",
            f"{len(r['enhance']) / r['span']:5.2f}/s", enhance, outcomes, size, _memory(r),
        ))
    return rows


def _memory(result: dict) -> str:
    workers = f" + {result['workers_rss'] / 2**20:.0f} MB" if result["workers_rss"] else ""
    return f"{result['rss'] / 2**20:.0f} MB{workers}"


async def main(args) -> None:
    env = {"POET_GATE_TIMEOUT_SECONDS": str(args.gate_timeout)}
    results = await run_server(env, list(ATTACKS), args)
    rows = rows_of(results, "")
    if args.baseline_tree:
        tree = Path(args.baseline_tree).resolve()
        old_env = env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
        log(f"old design from {tree}")
        rows += rows_of(await run_server(old_env, ["10,000 params"], args, cwd=tree), "old design: ")
    header = ("ListDomains during", "p50 ms", "p99 ms", "max ms", "p50 / p99 vs idle", "Enhance",
              "Enhance p50", "Enhance outcomes", "enhanced", "RSS peak: server + generator workers")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\nPOET amplification bench: {os.cpu_count()} cores, {CALLERS} attacking callers, "
          f"{args.seconds:g} s per attack{' (--quick)' if args.quick else ''}, server python {sys.executable}\n")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"\ntook {time.perf_counter() - STARTED:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each attack (the report: 40 s)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="length of the idle ListDomains run")
    parser.add_argument("--quick", action="store_true", help="12 s attacks and a 5 s idle run, for a smoke run")
    parser.add_argument("--baseline-tree", default="", help="a checkout of the old design to measure in the same run")
    parser.add_argument("--gate-timeout", type=float, default=10.0, help="POET_GATE_TIMEOUT_SECONDS for the server")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.seconds, parsed.idle_seconds = min(parsed.seconds, 12.0), min(parsed.idle_seconds, 5.0)
    asyncio.run(main(parsed))
