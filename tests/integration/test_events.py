"""ListEvents, PublishEvents and StreamEvents against a real server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb
from support import violated_fields


def event(type_: str, function_name: str = "", *, id_: str = "", seconds: int | None = None, correlation_id: str = "", **payload):
    body = struct_pb2.Struct()
    body.update(payload)
    message = events_pb2.Event(
        id=id_, type=type_, source="tests", function_name=function_name, payload=body, correlation_id=correlation_id
    )
    if seconds is not None:
        message.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds))
    return message


async def publish(stub, *events):
    return (await stub.PublishEvents(pb.PublishEventsRequest(events=list(events)))).results


async def all_events(stub, **filters) -> list:
    return list((await stub.ListEvents(pb.ListEventsRequest(page_size=1000, **filters))).events)


async def test_publish_appends_with_consecutive_positions_and_defaults(stub):
    results = await publish(stub, event("sensor.spike", "detect"), event("sensor.summary", "detect"))
    assert [r.position for r in results] == [1, 2]
    assert all(r.id and not r.duplicate for r in results)
    stored = await all_events(stub)
    assert [e.type for e in stored] == ["sensor.spike", "sensor.summary"]
    assert stored[0].metadata.version == "1.0" and stored[0].metadata.environment == "dev"
    assert stored[0].timestamp.seconds > 0


async def test_publish_is_idempotent_by_event_id(stub):
    first = await publish(stub, event("a.b", id_="evt-1"), event("a.b", id_="evt-2"))
    again = await publish(stub, event("a.b", id_="evt-2"), event("a.b", id_="evt-3"), event("a.b", id_="evt-3"))
    assert [(r.id, r.duplicate) for r in again] == [("evt-2", True), ("evt-3", False), ("evt-3", True)]
    assert again[0].position == first[1].position
    assert [e.id for e in await all_events(stub)] == ["evt-1", "evt-2", "evt-3"]


@pytest.mark.parametrize(
    "events, field",
    [
        ([], "events"),
        ([event("ok.type"), event("")], "events[1].type"),
        ([event("has spaces")], "events[0].type"),
        ([event("ok.type", payload_blob="x" * 300_000)], "events[0]"),
        ([event("ok.type", function_name="not valid")], "events[0].function_name"),
        # A problem found once in a batch is still reported for every event that has it.
        ([event("bad type"), event("bad type")], "events[1].type"),
        ([event("ok.type", "bad name"), event("ok.type", "bad name")], "events[1].function_name"),
        ([event("ok.type"), event("ok.type", payload_blob="x" * 300_000)], "events[1]"),
    ],
)
async def test_invalid_batches_append_nothing(stub, events, field):
    await publish(stub, event("seed.event"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.PublishEvents(pb.PublishEventsRequest(events=events))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violated_fields(failure.value)
    assert len(await all_events(stub)) == 1


async def test_list_events_filters_by_function_type_time_and_correlation(stub):
    await publish(
        stub,
        event("sensor.spike", "a", seconds=1_000, correlation_id="c1"),
        event("sensor.spike", "b", seconds=2_000),
        event("sensor.note", "a", seconds=3_000, correlation_id="c1"),
        event("sensor.spike", "a", seconds=4_000),
    )
    assert [e.position for e in await all_events(stub, function_name="a")] == [1, 3, 4]
    assert [e.position for e in await all_events(stub, event_type="sensor.spike")] == [1, 2, 4]
    assert [e.position for e in await all_events(stub, correlation_id="c1")] == [1, 3]
    window = await all_events(
        stub, start_time=timestamp_pb2.Timestamp(seconds=2_000), end_time=timestamp_pb2.Timestamp(seconds=4_000)
    )
    assert [e.position for e in window] == [2, 3]


async def test_list_events_pages_and_limit_alias(stub):
    await publish(stub, *(event("tick.tock", "clock", n=i) for i in range(7)))
    seen, token = [], ""
    while True:
        page = await stub.ListEvents(pb.ListEventsRequest(function_name="clock", limit=3, page_token=token))
        assert len(page.events) <= 3
        seen += [int(e.payload["n"]) for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(7))


async def test_page_token_from_other_filters_is_rejected(stub):
    await publish(stub, *(event("tick.tock", "clock") for _ in range(3)))
    page = await stub.ListEvents(pb.ListEventsRequest(function_name="clock", page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListEvents(pb.ListEventsRequest(event_type="tick.tock", page_size=1, page_token=page.next_page_token))
    assert violated_fields(failure.value) == {"page_token"}


async def test_list_events_rejects_reversed_time_range(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListEvents(
            pb.ListEventsRequest(start_time=timestamp_pb2.Timestamp(seconds=5), end_time=timestamp_pb2.Timestamp(seconds=1))
        )
    assert violated_fields(failure.value) == {"end_time"}


async def read_stream(call, count: int, timeout: float = 10.0):
    """The next `count` events from a stream (checkpoints set aside)."""
    events, checkpoints = [], []

    async def collect():
        async for item in call:
            if item.HasField("event"):
                events.append(item.event)
                if len(events) == count:
                    return
            else:
                checkpoints.append(item.checkpoint)

    await asyncio.wait_for(collect(), timeout)
    return events, checkpoints


async def test_stream_sends_backlog_after_position_then_live_events(stub):
    await publish(stub, *(event("tick.tock", n=i) for i in range(5)))
    call = stub.StreamEvents(pb.StreamEventsRequest(after_position=2))
    backlog, checkpoints = await read_stream(call, 3)
    assert [e.position for e in backlog] == [3, 4, 5]
    await publish(stub, event("tick.tock", n=5), event("tick.tock", n=6))
    live, checkpoints = await read_stream(call, 2)
    assert [e.position for e in live] == [6, 7]
    assert any(c.caught_up and c.position == 5 for c in checkpoints)
    call.cancel()


async def test_stream_has_no_gaps_or_reordering_under_concurrent_publishers(stub):
    call = stub.StreamEvents(pb.StreamEventsRequest())
    publishers = [publish(stub, *(event("load.test", n=p * 100 + i) for i in range(10))) for p in range(20) for _ in [0]]
    reader = asyncio.create_task(read_stream(call, 200, timeout=30))
    await asyncio.gather(*publishers)
    events, _ = await reader
    assert [e.position for e in events] == list(range(1, 201))
    call.cancel()


@pytest.mark.checkpoint_seconds(0.5)
async def test_stream_filters_and_checkpoints_advance_past_other_events(stub):
    call = stub.StreamEvents(pb.StreamEventsRequest(function_name="a", event_type="sensor.spike"))
    await publish(stub, event("sensor.spike", "b"), event("other.thing", "a"), event("sensor.spike", "a"))
    events, _ = await read_stream(call, 1)
    assert [(e.position, e.function_name) for e in events] == [(3, "a")]
    await publish(stub, event("noise.only", "z"))
    # idle checkpoints (every 0.5 s here) move past the non-matching event
    async for item in call:
        if item.HasField("checkpoint") and item.checkpoint.position >= 4:
            break
    call.cancel()


async def test_stream_resumes_after_reconnect_without_loss(stub):
    await publish(stub, *(event("tick.tock", n=i) for i in range(3)))
    first = stub.StreamEvents(pb.StreamEventsRequest())
    events, _ = await read_stream(first, 2)
    first.cancel()
    await publish(stub, event("tick.tock", n=3))
    resumed = stub.StreamEvents(pb.StreamEventsRequest(after_position=events[-1].position))
    rest, _ = await read_stream(resumed, 2)
    assert [e.position for e in rest] == [3, 4]
    resumed.cancel()


async def test_live_only_skips_the_backlog(stub):
    await publish(stub, event("old.event"))
    call = stub.StreamEvents(pb.StreamEventsRequest(live_only=True))
    async for item in call:  # wait until the stream is caught up (and so registered)
        if item.HasField("checkpoint"):
            assert item.checkpoint.position == 1
            break
    await publish(stub, event("new.event"))
    events, _ = await read_stream(call, 1)
    assert [e.type for e in events] == ["new.event"]
    call.cancel()


async def test_invalid_stream_request(stub):
    call = stub.StreamEvents(pb.StreamEventsRequest(live_only=True, after_position=3))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in call:
            pass
    assert violated_fields(failure.value) == {"live_only"}
