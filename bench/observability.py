"""What metrics and tracing cost per call, and what a scrape costs.

1. Three `poet-grpc serve` processes: the metrics interceptor off (taken out of the
   interceptor chain), on (the default), and on with tracing (OTLP over gRPC to a
   receiver in this process). The same cheap RPC (ListDomains) is timed over gRPC
   at concurrency 1, in interleaved rounds; medians, p95 and the ratio to "off".
2. In this process: the metrics interceptor's own work per call, a no-op unary
   handler called through it beside the bare handler.
3. In this process: exposition() (what GET /metrics renders) on a real server core
   after N functions were enhanced, with the number of series: neither grows with N.

    .venv/bin/python bench/observability.py [--calls N] [--functions 1,10,100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import FUNCTION, Server, percentile  # noqa: E402
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402
from poet_grpc.api.interceptors.metrics import MetricsInterceptor  # noqa: E402
from poet_grpc.config import Settings  # noqa: E402
from poet_grpc.observability.metrics import Metrics  # noqa: E402

METRICS_OFF = '''
# Loaded at interpreter start (PYTHONPATH): the server runs without the metrics interceptor.
import grpc.aio

_server = grpc.aio.server


def _without_metrics(*args, interceptors=None, **kwargs):
    from poet_grpc.api.interceptors.metrics import MetricsInterceptor
    kept = [i for i in interceptors or () if not isinstance(i, MetricsInterceptor)]
    if len(kept) < len(interceptors or ()):
        print("bench: metrics interceptor taken out", flush=True)
    return _server(*args, interceptors=kept, **kwargs)


grpc.aio.server = _without_metrics
'''


async def time_calls(address: str, calls: int) -> list[float]:
    """Latency (µs) of ListDomains, one call at a time."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        for _ in range(50):  # warm up the connection and the server's caches
            await stub.ListDomains(pb.ListDomainsRequest())
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.ListDomains(pb.ListDomainsRequest())
            samples.append((time.perf_counter() - started) * 1e6)
        return samples


class SpanReceiver:
    """An OTLP/gRPC trace collector that only counts what it is sent."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self
        self.spans = 0
        self._lock = threading.Lock()

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                with receiver._lock:
                    receiver.spans += count
                return trace_service_pb2.ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)


def tracing_env(receiver: SpanReceiver) -> dict[str, str]:
    """The environment an operator sets for traces: OTLP over gRPC (see README, Traces)."""
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}


def end_to_end(calls: int) -> tuple[dict[str, list[float]], int]:
    """ListDomains latencies (µs) by configuration, and the spans the receiver got."""
    untraced = {name: "" for name in os.environ if name.startswith("OTEL_")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "patch").mkdir()
        (folder / "patch" / "sitecustomize.py").write_text(METRICS_OFF)
        pythonpath = os.pathsep.join(filter(None, [str(folder / "patch"), os.environ.get("PYTHONPATH", "")]))
        receiver = SpanReceiver()
        configurations = {
            "metrics off": {**untraced, "PYTHONPATH": pythonpath},
            "metrics on (default)": untraced,
            "metrics and tracing on": tracing_env(receiver),
        }
        servers = {}
        try:
            for index, (name, env) in enumerate(configurations.items()):
                (folder / str(index)).mkdir()
                servers[name] = Server(folder / str(index), env=env)
            if not any("metrics interceptor taken out" in line for line in servers["metrics off"].startup_lines):
                raise SystemExit("the metrics-off server still has its metrics interceptor")
            results: dict[str, list[float]] = {name: [] for name in configurations}
            # Interleaved rounds, so drift on a shared machine hits every row alike.
            for _ in range(3):
                for name, server in servers.items():
                    results[name] += asyncio.run(time_calls(server.address, calls // 3))
        finally:
            for server in servers.values():
                server.stop()  # a stopped server flushes its spans
            receiver.stop()
    return results, receiver.spans


class _Context:
    """Just enough of a grpc.aio.ServicerContext for the interceptor."""

    def code(self):
        return None


async def interceptor_alone(calls: int) -> dict[str, list[float]]:
    """Per-call time (µs) of a no-op unary handler, bare and through the metrics interceptor."""
    response = pb.ListDomainsResponse()

    async def behavior(request, context):
        return response

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details):
        return handler

    details = SimpleNamespace(method="/poet.v1.PoetService/ListDomains", invocation_metadata=())
    interceptor = MetricsInterceptor(Metrics())
    request, context = pb.ListDomainsRequest(), _Context()

    async def bare():
        await behavior(request, context)

    async def measured():
        # What the server does per call: intercept (wrap the handler), then call it.
        wrapped = await interceptor.intercept_service(continuation, details)
        await wrapped.unary_unary(request, context)

    results: dict[str, list[float]] = {"bare handler": [], "through MetricsInterceptor": []}
    for _ in range(3):
        for name, call in (("bare handler", bare), ("through MetricsInterceptor", measured)):
            for _ in range(calls // 3):
                started = time.perf_counter()
                await call()
                results[name].append((time.perf_counter() - started) * 1e6)
    return results


async def exposition_cost(function_counts: list[int], calls: int) -> list[tuple[int, int, int, list[float]]]:
    """(functions, series, bytes, exposition() µs samples) on a real core after enhancing that many functions."""
    from prometheus_client.parser import text_string_to_metric_families

    from poet_grpc.api.server import create_server

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = dataclasses.replace(Settings(), grpc_listen="127.0.0.1:0", gateway=False, db=Path(tmp) / "poet.db")
        server, port = await create_server(settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                done = 0
                for target in sorted(function_counts):
                    for n in range(done, target):
                        await stub.Enhance(pb.EnhanceRequest(function_name=f"score_{n}",
                                                             original_code=FUNCTION.format(n=n)))
                        await stub.GetVersion(pb.GetVersionRequest(function_name=f"score_{n}", version="current"))
                    done = target
                    body, _ = server.core.metrics.exposition()
                    series = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
                    samples = []
                    for _ in range(calls):
                        started = time.perf_counter()
                        server.core.metrics.exposition()
                        samples.append((time.perf_counter() - started) * 1e6)
                    rows.append((target, series, len(body), samples))
        finally:
            await server.stop(grace=1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per row [3000]")
    parser.add_argument("--functions", default="1,10,100", help="functions enhanced before each exposition row")
    parser.add_argument("--quick", action="store_true", help="600 calls per row, functions 1,10")
    args = parser.parse_args()
    calls = 600 if args.quick else args.calls
    function_counts = [1, 10] if args.quick else [int(n) for n in args.functions.split(",")]

    results, spans = end_to_end(calls)
    base = statistics.median(results["metrics off"])
    print(f"ListDomains over gRPC, concurrency 1, {len(results['metrics off'])} calls per row (µs)")
    print(f"{'server':<28}{'p50':>10}{'p95':>10}{'p50 - off':>12}{'ratio':>8}")
    for name, samples in results.items():
        p50 = statistics.median(samples)
        print(f"{name:<28}{p50:>10.1f}{percentile(samples, 0.95):>10.1f}{p50 - base:>12.1f}{p50 / base:>8.2f}")
    print(f"(spans received from the traced server: {spans})")

    local = asyncio.run(interceptor_alone(calls * 10))
    base = statistics.median(local["bare handler"])
    print()
    print(f"the interceptor alone, in this process, {len(local['bare handler'])} calls (µs)")
    print(f"{'call':<28}{'p50':>10}{'p95':>10}{'p50 - bare':>12}")
    for name, samples in local.items():
        p50 = statistics.median(samples)
        print(f"{name:<28}{p50:>10.2f}{percentile(samples, 0.95):>10.2f}{p50 - base:>12.2f}")

    rows = asyncio.run(exposition_cost(function_counts, max(50, calls // 20)))
    print()
    print("exposition() on a server core after N functions were enhanced (µs)")
    print(f"{'functions':>10}{'series':>10}{'bytes':>10}{'p50':>10}{'p95':>10}")
    for functions, series, size, samples in rows:
        p50, p95 = statistics.median(samples), percentile(samples, 0.95)
        print(f"{functions:>10}{series:>10}{size:>10}{p50:>10.0f}{p95:>10.0f}")


if __name__ == "__main__":
    main()
