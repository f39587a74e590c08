"""The server when its PostgreSQL database goes away and comes back: calls answer
UNAVAILABLE with RetryInfo at once (never a hang, never INTERNAL), readiness says
not ready, and once the database is back the same calls succeed, the log intact,
streams and the learning loop carrying on. A server of its own (halted mid-test)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import pytest_asyncio

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc, probes_pb2, probes_pb2_grpc
from poet_grpc.config import Settings
from postgres_support import PostgresServer, find_bin_dir
from support import details


@pytest.fixture
def database():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("needs Debian's postgresql binaries")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server, server.url(server.create_database())
    finally:
        server.stop()


@pytest_asyncio.fixture
async def service(database):
    from poet_grpc.api.server import create_server

    _, url = database
    server, port = await create_server(Settings(grpc_listen="127.0.0.1:0", gateway=False, db=url,
                                                checkpoint_seconds=1.0))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield poet_service_pb2_grpc.PoetServiceStub(channel), probes_pb2_grpc.ProbeServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(grace=1)


def tick(n: int) -> events_pb2.Event:
    return events_pb2.Event(id=f"tick-{n}", type="outage.tick", source="tests")


@pytest.mark.timeout(120)
async def test_a_lost_database_answers_unavailable_then_recovers(database, service):
    postgres, _ = database
    stub, probes = service
    first = await stub.PublishEvents(pb.PublishEventsRequest(events=[tick(0), tick(1)]))
    assert [r.position for r in first.results] == [1, 2]
    assert (await probes.GetReadiness(probes_pb2.GetReadinessRequest())).status == probes_pb2.ready
    stream = stub.StreamEvents(pb.StreamEventsRequest())
    seen = [(await stream.read()).event.id for _ in range(2)]
    assert seen == ["tick-0", "tick-1"]

    postgres.halt()
    # Every kind of call fails fast with UNAVAILABLE and a retry delay.
    for attempt in range(6):
        started = time.monotonic()
        calls = [stub.PublishEvents(pb.PublishEventsRequest(events=[tick(10 + attempt)]), timeout=15),
                 stub.ListEvents(pb.ListEventsRequest(), timeout=15),
                 stub.ListVersions(pb.ListVersionsRequest(function_name="f"), timeout=15)]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE, failure.value.details()
            found = details(failure.value)
            assert found["ErrorInfo"].reason == "STORE_UNAVAILABLE"
            assert found["RetryInfo"].retry_delay.ToMilliseconds() >= 250
            assert "Traceback" not in failure.value.details() and "127.0.0.1" not in failure.value.details()
        assert time.monotonic() - started < 8, "calls waited on the lost database"
        await asyncio.sleep(0.3)
    ready = await probes.GetReadiness(probes_pb2.GetReadinessRequest(), timeout=5)
    assert ready.status == probes_pb2.not_ready and not ready.checks.storage

    postgres.restart()
    deadline = time.monotonic() + 30
    while True:
        try:
            again = await stub.PublishEvents(pb.PublishEventsRequest(events=[tick(1), tick(2)]), timeout=5)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert time.monotonic() < deadline, "the server did not recover within 30 s"
            await asyncio.sleep(0.5)
    assert [(r.id, r.duplicate) for r in again.results] == [("tick-1", True), ("tick-2", False)]
    assert again.results[1].position == 3  # nothing of the failed calls was stored
    while (await probes.GetReadiness(probes_pb2.GetReadinessRequest())).status != probes_pb2.ready:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    # The stream opened before the outage carries on, with the event after it.
    item = await asyncio.wait_for(stream.read(), 15)
    while item.WhichOneof("item") != "event":
        item = await asyncio.wait_for(stream.read(), 15)
    assert (item.event.position, item.event.id) == (3, "tick-2")
    stream.cancel()
