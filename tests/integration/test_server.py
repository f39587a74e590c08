"""Health, reflection, startup errors and graceful shutdown of a real server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.config import Settings
from poet_grpc.api.server import create_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["", "poet.v1.PoetService"])
async def test_health_overall_and_per_service(channel, service):
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == SERVING


async def test_health_of_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope.Service"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        break
    assert {"poet.v1.PoetService", "grpc.health.v1.Health"} <= names


async def test_graceful_stop_turns_health_off_ends_streams_and_finishes_in_flight_calls(settings):
    server, port = await create_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="poet.v1.PoetService"))
        assert (await watch.read()).status == SERVING
        stream = stub.StreamEvents(pb.StreamEventsRequest())
        assert (await stream.read()).HasField("checkpoint")  # open and caught up
        in_flight = asyncio.ensure_future(
            stub.Enhance(pb.EnhanceRequest(function_name="f", original_code="def f(x: int) -> int:\n    return x + 1\n"))
        )
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(server.stop(grace=10))
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        watch.cancel()  # a watcher that lingers would hold the stop for the whole grace period
        rest = []  # the stream ends instead of hanging
        while (item := await asyncio.wait_for(stream.read(), 10)) is not grpc.aio.EOF:
            rest.append(item)
        assert all(item.HasField("checkpoint") or item.HasField("event") for item in rest)
        assert await stream.code() == grpc.StatusCode.OK
        response = await asyncio.wait_for(in_flight, 10)
        assert response.version == "v1"
        await asyncio.wait_for(stopping, 5)  # well inside the 10 s grace: nothing is left open


async def test_stored_data_survives_a_restart(settings):
    server, port = await create_server(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        await stub.Enhance(pb.EnhanceRequest(function_name="f", original_code="def f():\n    return 1\n"))
    await server.stop(grace=1)
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="f"))
            assert listing.current_version == "v1"
            events = await stub.ListEvents(pb.ListEventsRequest())
            assert [e.position for e in events.events] == [1]
    finally:
        await server.stop(grace=1)


async def test_port_in_use_is_a_clear_error(settings, tmp_path):
    first, port = await create_server(settings)
    try:
        clash = Settings(grpc_listen=f"127.0.0.1:{port}", gateway=False, db=tmp_path / "other.db")
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await create_server(clash)
    finally:
        await first.stop(grace=1)
