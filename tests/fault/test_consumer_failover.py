"""Fault test: kill -9 the replica that runs the learning loop in the middle of its work.

Two `poet-grpc serve` replicas share one PostgreSQL database. Each log consumer runs
on one replica at a time, holding its lease (a session advisory lock; see
poet_grpc/store/_replicas.py). The test finds the holder of the learning loop's lease
from PostgreSQL itself (pg_locks, and the application_name that carries the holder's
pid), publishes drift detections and unhelpful retraining reports, kills the holder
with SIGKILL while it is deriving alerts from them, and checks that the other replica
takes the lease over within seconds and that, in the end, every trigger has exactly
one derived event: nothing derived twice, nothing never.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.store._replicas import LEASE_LOCKS, lease_key

ROOT = Path(__file__).resolve().parents[2]
TRIGGERS = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replica(url: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, POET_LOG_LEVEL="WARNING", POET_CHECKPOINT_SECONDS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "poet_grpc", "serve", "--no-gateway", "--grpc-listen", f"127.0.0.1:{port}",
         "--db", url],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 60
    for line in process.stdout:
        if "gRPC listening" in line:
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError(f"replica did not start: {process.stdout.read()}")


def lease_holder(url: str, name: str) -> int | None:
    """The pid of the process holding the lease, from the holder's application_name."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LEASE_LOCKS, lease_key(name) % 2**32),
        ).fetchone()
    if row is None:
        return None
    assert row[0].startswith("poet-leases pid="), row[0]
    return int(row[0].removeprefix("poet-leases pid="))


def wait_for_holder(url: str, name: str, *, not_pid: int | None = None, timeout: float = 20) -> tuple[int, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pid = lease_holder(url, name)
        if pid is not None and pid != not_pid:
            return pid, time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"nobody (but {not_pid}) took the {name} lease within {timeout} s")


def derived_counts(url: str) -> dict[str, int]:
    """type -> number of events of that type in the log."""
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())


def triggers(offset: int, count: int) -> list[events_pb2.Event]:
    events = []
    for n in range(offset, offset + count):
        if n % 2:
            payload = {"execution_id": f"x{n}", "model_name": "churn", "drift_score": 0.9}
            kind = "drift.detected"
        else:
            payload = {"execution_id": f"x{n}", "model_name": "churn", "performance_improvement": -0.01,
                       "retraining_cost_usd": 12}
            kind = "feedback.model_retrained"
        body = struct_pb2.Struct()
        body.update(payload)
        events.append(events_pb2.Event(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"trigger/{n}")), type=kind,
                                       function_name="detect_drift", payload=body, source="tests"))
    return events


async def publish(addresses: list[str], events: list[events_pb2.Event]) -> None:
    """Publish, moving on to the next replica when one is gone (the ids make it safe)."""
    for attempt in range(40):
        address = addresses[attempt % len(addresses)]
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                await stub.PublishEvents(pb.PublishEventsRequest(events=events), timeout=10)
                return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise AssertionError("no replica took the batch")


@pytest.mark.timeout(240)
def test_killing_the_learning_loops_replica_mid_batch_moves_it_without_loss_or_repeat(postgres_url):
    ports = [free_port() for _ in range(2)]
    replicas = {}
    try:
        for port in ports:
            process = start_replica(postgres_url, port)
            replicas[process.pid] = (process, f"127.0.0.1:{port}")
        holder, _ = wait_for_holder(postgres_url, "learning")
        assert holder in replicas
        survivor = next(pid for pid in replicas if pid != holder)
        addresses = [replicas[holder][1], replicas[survivor][1]]

        # The first half, then the holder dies while it derives from the second half.
        asyncio.run(publish(addresses, triggers(0, TRIGGERS // 2)))
        asyncio.run(publish(addresses, triggers(TRIGGERS // 2, TRIGGERS // 2)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = derived_counts(postgres_url)
            derived = counts.get("alert.create_external", 0) + counts.get("learning.false_positive_detected", 0)
            if derived >= TRIGGERS // 4:
                break
            time.sleep(0.01)
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        replicas[holder][0].wait(timeout=30)
        assert derived < TRIGGERS, "the holder finished before it was killed: nothing to take over"

        new_holder, _ = wait_for_holder(postgres_url, "learning", not_pid=holder)
        takeover = time.monotonic() - killed_at
        assert new_holder == survivor
        assert takeover < 10, f"the lease moved only after {takeover:.1f} s"

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = derived_counts(postgres_url)
            if (counts.get("alert.create_external", 0) == TRIGGERS // 2
                    and counts.get("learning.false_positive_detected", 0) == TRIGGERS // 2):
                break
            time.sleep(0.2)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            per_trigger = conn.execute(
                "SELECT t.id, count(d.id) FROM events t LEFT JOIN events d ON d.causation_id = t.id "
                "AND d.type IN ('alert.create_external', 'learning.false_positive_detected') "
                "WHERE t.type IN ('drift.detected', 'feedback.model_retrained') GROUP BY t.id"
            ).fetchall()
        assert len(per_trigger) == TRIGGERS
        wrong = {trigger: n for trigger, n in per_trigger if n != 1}
        assert not wrong, f"{len(wrong)} triggers derived other than once, e.g. {list(wrong.items())[:5]}"
    finally:
        for process, _ in replicas.values():
            process.kill()
            process.wait(timeout=30)
            if process.stdout:
                process.stdout.close()
