"""REST through Envoy next to direct gRPC, for the same calls; prints a table.

    .venv/bin/python bench/rest.py [--calls 400] [--concurrency 1] [--repeats 3]

Starts `poet-grpc serve` (gRPC server + Envoy gateway, fresh SQLite file) as its
own process, stores one function and a few hundred events, then makes the same
calls three ways from this process:

- gRPC: a grpc.aio stub straight to the gRPC port;
- gRPC via Envoy: the same stub to the gateway port (native gRPC passes through),
  which isolates the extra proxy hop;
- REST: HTTP/1.1 keep-alive to the gateway, Envoy transcoding JSON <-> protobuf;
  once with a minimal client (asyncio streams + json.loads: close to the cost
  of Envoy and the server) and once with httpx (a typical Python client, which
  adds its own ~1 ms per call here).

Reports p50/p95 latency per call in ms (medians over --repeats runs) and the
REST / gRPC ratios of the p50s. Client, server and Envoy share the machine's
cores; the machine is shared and noisy: compare ratios, not single digits.
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
from typing import Awaitable, Callable

import json

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from poet_grpc._gen.poet.v1 import (  # noqa: E402
    events_pb2,
    poet_service_pb2 as pb,
    poet_service_pb2_grpc,
    probes_pb2,
    probes_pb2_grpc,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import Server, percentile  # noqa: E402

CODE = "def area(width: float, height: float) -> float:\n    return width * height\n"


Call = Callable[[int], Awaitable[object]]


class RawHttp:
    """Keep-alive HTTP/1.1 connections, one per caller in flight; just enough for the gateway's answers."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> object:
        reader, writer = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        status, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
        payload = await reader.readexactly(length)
        self._idle.append((reader, writer))
        if not status.split()[1].startswith("2"):
            raise RuntimeError(f"{method} {path}: {status} {payload[:200]!r}")
        return json.loads(payload)

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


async def latencies(call: Call, total: int, concurrency: int) -> list[float]:
    """Latency (ms) of `total` calls, `concurrency` at a time."""
    samples: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for n in counter:
            started = time.perf_counter()
            await call(n)
            samples.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def grpc_calls(channel: grpc.aio.Channel, run: str) -> dict[str, Call]:
    poet = poet_service_pb2_grpc.PoetServiceStub(channel)
    probes = probes_pb2_grpc.ProbeServiceStub(channel)

    def publish(n: int):
        return poet.PublishEvents(pb.PublishEventsRequest(
            events=[events_pb2.Event(type="bench.tick", function_name="area", id=f"g-{run}-{n}")]))

    return {
        "GetVersion": lambda n: poet.GetVersion(pb.GetVersionRequest(function_name="area", version="v1")),
        "ListEvents (50)": lambda n: poet.ListEvents(pb.ListEventsRequest(function_name="area", page_size=50)),
        "ListDomains (~37 KB)": lambda n: poet.ListDomains(pb.ListDomainsRequest()),
        "PublishEvents (1 event)": publish,
        "GetReadiness": lambda n: probes.GetReadiness(probes_pb2.GetReadinessRequest()),
    }


def raw_calls(http: RawHttp, run: str) -> dict[str, Call]:
    def publish(n: int):
        body = {"events": [{"type": "bench.tick", "function_name": "area", "id": f"w-{run}-{n}"}]}
        return http.request("POST", "/api/v1/events:publish", json.dumps(body).encode())

    return {
        "GetVersion": lambda n: http.request("GET", "/api/v1/functions/area/versions/v1"),
        "ListEvents (50)": lambda n: http.request("GET", "/api/v1/functions/area/events?page_size=50"),
        "ListDomains (~37 KB)": lambda n: http.request("GET", "/v1/domains"),
        "PublishEvents (1 event)": publish,
        "GetReadiness": lambda n: http.request("GET", "/health/ready"),
    }


def rest_calls(http: httpx.AsyncClient, run: str) -> dict[str, Call]:
    async def get(path: str, params=None):
        response = await http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    async def publish(n: int):
        response = await http.post("/api/v1/events:publish", json={
            "events": [{"type": "bench.tick", "function_name": "area", "id": f"r-{run}-{n}"}]})
        response.raise_for_status()
        return response.json()

    return {
        "GetVersion": lambda n: get("/api/v1/functions/area/versions/v1"),
        "ListEvents (50)": lambda n: get("/api/v1/functions/area/events", {"page_size": 50}),
        "ListDomains (~37 KB)": lambda n: get("/v1/domains"),
        "PublishEvents (1 event)": publish,
        "GetReadiness": lambda n: get("/health/ready"),
    }


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        service = Server(Path(tmp), gateway=True)
        try:
            rows = await measure(service, args)
        finally:
            service.stop()
    print(f"\nPOET REST-through-Envoy vs gRPC: {os.cpu_count()} cores, {args.calls} calls per cell, "
          f"concurrency {args.concurrency}, medians of {args.repeats} runs; latency in ms\n")
    header = ("call", "gRPC p50", "gRPC p95", "gRPC via Envoy p50", "REST p50", "REST p95", "REST/gRPC",
              "REST httpx p50", "REST httpx p95", "httpx/gRPC")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


async def measure(service: Server, args) -> list[tuple[str, ...]]:
    gateway = f"127.0.0.1:{service.http_port}"
    async with grpc.aio.insecure_channel(service.address) as direct, \
            grpc.aio.insecure_channel(gateway) as proxied, \
            httpx.AsyncClient(base_url=f"http://{gateway}", timeout=30,
                              limits=httpx.Limits(max_keepalive_connections=args.concurrency)) as http:
        stub = poet_service_pb2_grpc.PoetServiceStub(direct)
        await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE))
        await stub.PublishEvents(pb.PublishEventsRequest(
            events=[events_pb2.Event(type="bench.seed", function_name="area") for _ in range(300)]))
        results: dict[str, dict[str, list[tuple[float, float]]]] = {}
        raw = RawHttp("127.0.0.1", service.http_port)
        for repeat in range(args.repeats):
            ways = {
                "grpc": grpc_calls(direct, f"d{repeat}"),
                "envoy": grpc_calls(proxied, f"e{repeat}"),
                "raw": raw_calls(raw, f"w{repeat}"),
                "httpx": rest_calls(http, f"r{repeat}"),
            }
            for name in ways["grpc"]:
                for way, calls in ways.items():  # interleaved, so drift hits every way alike
                    await latencies(calls[name], 50, args.concurrency)  # warm-up
                    samples = await latencies(calls[name], args.calls, args.concurrency)
                    results.setdefault(name, {}).setdefault(way, []).append(
                        (percentile(samples, 0.5), percentile(samples, 0.95)))
        await raw.close()

    def med(name: str, way: str, index: int) -> float:
        return statistics.median(sample[index] for sample in results[name][way])

    rows = []
    for name in results:
        grpc_p50, raw_p50, httpx_p50 = med(name, "grpc", 0), med(name, "raw", 0), med(name, "httpx", 0)
        rows.append((name, f"{grpc_p50:.2f}", f"{med(name, 'grpc', 1):.2f}", f"{med(name, 'envoy', 0):.2f}",
                     f"{raw_p50:.2f}", f"{med(name, 'raw', 1):.2f}", f"{raw_p50 / grpc_p50:.2f}x",
                     f"{httpx_p50:.2f}", f"{med(name, 'httpx', 1):.2f}", f"{httpx_p50 / grpc_p50:.2f}x"))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="measured calls per cell and run")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight at once")
    parser.add_argument("--repeats", type=int, default=3, help="runs; medians are reported")
    asyncio.run(main(parser.parse_args()))
