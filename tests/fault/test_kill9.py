"""Fault test: kill -9 the server again and again in the middle of a publish load.

After every kill the log is opened again (as a restart does) and checked: every
event whose PublishEvents call was acknowledged is present exactly once at the
position it was acknowledged with, positions run 1..N without a gap, and
SQLite's integrity check passes.

CI runs the bounded form (POET_FAULT_KILLS, default 20 kills, well under a
minute); set POET_FAULT_KILLS=200 for a longer soak.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.store import Store

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("POET_FAULT_KILLS", "20"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`poet-grpc serve` on db, gRPC only; env: extra POET_* settings."""
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, POET_LOG_LEVEL="WARNING", POET_SQLITE_SYNCHRONOUS="FULL", **env)
    process = subprocess.Popen(
        [sys.executable, "-m", "poet_grpc", "serve", "--no-gateway", "--grpc-listen", address, "--db", str(db)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if "gRPC listening" in line:
            return process, address
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError(f"server did not start: {process.stdout.read() if process.stdout else ''}")


async def publish_until_killed(address: str, acked: dict[str, int], process: subprocess.Popen, kill_after: float) -> int:
    """Publishers record the ids (and positions) of acknowledged events until the
    server is killed under them; returns how many calls were acknowledged."""
    calls = [0]

    async def publisher(stub):
        while True:
            batch = [events_pb2.Event(id=str(uuid.uuid4()), type="fault.load", source="tests")
                     for _ in range(random.choice((1, 1, 5, 50)))]
            try:
                response = await stub.PublishEvents(pb.PublishEventsRequest(events=batch), timeout=5)
            except grpc.aio.AioRpcError:
                return  # killed: this batch was never acknowledged
            for result in response.results:
                assert not result.duplicate
                acked[result.id] = result.position
            calls[0] += 1

    async with grpc.aio.insecure_channel(address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        tasks = [asyncio.create_task(publisher(stub)) for _ in range(8)]
        await asyncio.sleep(kill_after)
        os.kill(process.pid, signal.SIGKILL)  # mid-load: calls are in flight
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return calls[0]


def check_log(db: Path, acked: dict[str, int]) -> int:
    """Reopen the log (recovery, as at restart) and check it; returns its length."""
    with Store(db) as store:
        assert store.integrity_check() == "ok"
        rows = store._db.execute("SELECT position, id FROM events ORDER BY position").fetchall()
    positions = [p for p, _ in rows]
    assert positions == list(range(1, len(rows) + 1)), "positions have a gap"
    logged = {}
    for position, event_id in rows:
        assert event_id not in logged, f"{event_id} logged twice"
        logged[event_id] = position
    missing = [i for i in acked if i not in logged]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    moved = [i for i, p in acked.items() if logged[i] != p]
    assert not moved, f"acknowledged events at other positions: {moved[:3]}"
    return len(rows)


@pytest.mark.timeout(300)
def test_kill9_mid_publish_loses_no_acknowledged_event(tmp_path):
    db = tmp_path / "fault.db"
    acked: dict[str, int] = {}
    rng = random.Random(2026)
    acknowledged_calls = 0
    for _ in range(KILLS):
        process, address = start_server(db)
        try:
            acknowledged_calls += asyncio.run(
                publish_until_killed(address, acked, process, kill_after=rng.uniform(0.15, 0.6))
            )
        finally:
            process.kill()
            process.wait(timeout=30)
            if process.stdout:
                process.stdout.close()
        assert process.returncode == -signal.SIGKILL
        length = check_log(db, acked)
        assert length >= len(acked)
    assert acknowledged_calls > KILLS  # the load really ran between the kills
    assert len(acked) > 0
