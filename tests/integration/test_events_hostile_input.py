"""Hostile input to the event RPCs, against a real server: timestamps a Timestamp
cannot hold, forged page tokens, resume positions beyond the log, and messages
nested past protobuf's limit. Each is refused with a status and its details, stores
nothing, and leaves the server serving."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.config import Settings
from poet_grpc.api.interceptors.validation import MAX_STRUCT_DEPTH
from poet_grpc.api.server import create_server
from support import details, violated_fields
from test_events import all_events, event, publish, read_stream

DAY = 86400.0
MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


async def last_position(stub) -> int:
    events = await all_events(stub)
    return events[-1].position if events else 0


async def refused(call, code=grpc.StatusCode.INVALID_ARGUMENT) -> grpc.aio.AioRpcError:
    """The error of call() (a unary call or a stream), which must fail with code."""

    async def run() -> None:
        result = call()
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await asyncio.wait_for(run(), 10)
    assert failure.value.code() == code, failure.value.details()
    return failure.value


# -- wire format, for messages the Python API will not build ------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_struct(depth: int) -> bytes:
    """A Struct {"x": {"x": ... {"leaf": "y"}}} of `depth` objects, serialized."""
    struct = _field(1, _field(1, b"leaf") + _field(2, _field(3, b"y")))  # fields["leaf"] = string "y"
    for _ in range(depth - 1):
        struct = _field(1, _field(1, b"x") + _field(2, _field(5, struct)))  # fields["x"] = struct_value
    return struct


def publish_bytes(payload: bytes) -> bytes:
    """A PublishEventsRequest of one sensor.reading event with this serialized payload."""
    return _field(1, _field(2, b"sensor.reading") + _field(8, payload))


async def raw_call(channel, method: str, request: bytes, *, stream: bool = False):
    if stream:
        return [item async for item in channel.unary_stream(method)(request)]
    return await channel.unary_unary(method)(request)


# -- 1. timestamps -------------------------------------------------------------------

@pytest.mark.parametrize(
    "timestamp, field",
    [
        (timestamp_pb2.Timestamp(seconds=MAX_SECONDS + 1), "events[3].timestamp"),  # 10000-01-01
        (timestamp_pb2.Timestamp(seconds=-62135596801), "events[3].timestamp"),  # before 0001-01-01
        (timestamp_pb2.Timestamp(seconds=2**62), "events[3].timestamp"),
        (timestamp_pb2.Timestamp(seconds=1000, nanos=-1), "events[3].timestamp"),
        (timestamp_pb2.Timestamp(seconds=1000, nanos=1_000_000_000), "events[3].timestamp"),
    ],
)
async def test_publish_refuses_timestamps_out_of_range_and_streams_keep_serving(stub, timestamp, field):
    await publish(stub, event("seed.event"))
    live = stub.StreamEvents(pb.StreamEventsRequest())
    await read_stream(live, 1)
    batch = [event("ok.event") for _ in range(5)]
    batch[3].timestamp.CopyFrom(timestamp)
    failure = await refused(lambda: stub.PublishEvents(pb.PublishEventsRequest(events=batch)))
    assert violated_fields(failure) == {field}
    assert details(failure)["ErrorInfo"].domain == "poet.v1"
    assert await last_position(stub) == 1  # nothing of the batch stored
    # The live stream and the log still serve.
    [ok] = await publish(stub, event("after.event"))
    events, _ = await read_stream(live, 1)
    assert [e.position for e in events] == [ok.position] == [2]
    live.cancel()


@pytest.mark.parametrize("field", ["start_time", "end_time"])
async def test_list_events_refuses_time_bounds_out_of_range(stub, field):
    await publish(stub, event("seed.event"))
    bad = timestamp_pb2.Timestamp(seconds=MAX_SECONDS + 1)
    failure = await refused(lambda: stub.ListEvents(pb.ListEventsRequest(**{field: bad})))
    assert violated_fields(failure) == {field}
    failure = await refused(lambda: stub.ListEvents(pb.ListEventsRequest(**{field: timestamp_pb2.Timestamp(nanos=-5)})))
    assert violated_fields(failure) == {field}
    assert len(await all_events(stub)) == 1


async def test_the_last_valid_timestamp_is_stored_and_read_back_everywhere(stub):
    """9999-12-31T23:59:59.999999999Z is valid; stored as float seconds it rounds up
    past the end of the range, which made every read covering it INTERNAL."""
    latest = event("far.future")
    latest.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=MAX_SECONDS, nanos=999_999_999))
    earliest = event("far.past")
    earliest.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=-62135596800))
    await publish(stub, latest, earliest, event("now.event"))
    listed = await all_events(stub)
    assert [e.timestamp.seconds for e in listed[:2]] == [MAX_SECONDS, -62135596800]
    window = await all_events(stub, start_time=timestamp_pb2.Timestamp(seconds=MAX_SECONDS))
    assert [e.type for e in window] == ["far.future"]
    single, _ = await read_stream(stub.StreamEvents(pb.StreamEventsRequest()), 3)
    assert [e.type for e in single] == ["far.future", "far.past", "now.event"]
    batched = stub.StreamEvents(pb.StreamEventsRequest(max_batch_size=10))
    async for item in batched:
        assert [e.type for e in item.batch.events] == ["far.future", "far.past", "now.event"]
        break
    batched.cancel()


async def test_retention_goes_by_append_time_not_the_claimed_timestamp(server, stub):
    """A far-future timestamp once stopped retention for good (it trims from the log's
    start and stops at the first event not yet expired); a backdated one expired at once."""
    future = event("far.future", id_="future")
    future.timestamp.CopyFrom(timestamp_pb2.Timestamp(seconds=MAX_SECONDS))
    backdated = int(time.time() - 40 * DAY)
    await publish(stub, future, *(event("old.claim", id_=f"old-{n}", seconds=backdated) for n in range(3)))
    # Appended just now: nothing is expired, whatever the events claim.
    assert await server.core.retention.run_once() == 0
    [again] = await publish(stub, event("old.claim", id_="old-0"))
    assert again.duplicate  # the dedup window is the retention period, by append time too
    # 31 days on, all of them expired (the last one is always kept).
    assert await server.core.retention.run_once(now=time.time() + 31 * DAY) == 3
    assert [e.id for e in await all_events(stub)] == ["old-2"]


# -- 2. page tokens ------------------------------------------------------------------

def forged(after: int, filters: list) -> str:
    """A token in the unsigned shape tokens once had, with the digest of the filters
    (anyone can compute it)."""
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
    raw = json.dumps({"a": after, "f": digest}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


LISTINGS = {
    # rpc: (call with a token, the filters its tokens are bound to)
    "ListEvents": (lambda stub, token: stub.ListEvents(pb.ListEventsRequest(page_size=1, page_token=token)),
                   ["", "", "", None, None]),
    "ListVersions": (lambda stub, token: stub.ListVersions(
        pb.ListVersionsRequest(function_name="calc", page_size=1, page_token=token)), ["calc"]),
    "ListDeadLetters": (lambda stub, token: stub.ListDeadLetters(
        pb.ListDeadLettersRequest(page_size=1, page_token=token)), [""]),
}


@pytest.mark.parametrize("rpc", sorted(LISTINGS))
@pytest.mark.parametrize("after", [2**63, 2**64 + 5, 1])
async def test_forged_page_tokens_are_invalid_page_tokens(stub, rpc, after):
    await publish(stub, event("seed.event"), event("seed.event"))
    call, filters = LISTINGS[rpc]
    failure = await refused(lambda: call(stub, forged(after, filters)))
    assert violated_fields(failure) == {"page_token"}
    assert details(failure)["ErrorInfo"].reason == "INVALID_PAGE_TOKEN"
    assert len(await all_events(stub)) == 2  # still serving


async def test_edited_or_truncated_tokens_are_invalid_page_tokens(stub):
    await publish(stub, *(event("tick.tock") for _ in range(3)))
    token = (await stub.ListEvents(pb.ListEventsRequest(page_size=1))).next_page_token
    blob = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    blob[5] ^= 1
    edited = base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    for bad in (edited, token[:-3], token[:8], token + "AAAA", "x" * 5000):
        failure = await refused(lambda: stub.ListEvents(pb.ListEventsRequest(page_size=1, page_token=bad)))
        assert details(failure)["ErrorInfo"].reason == "INVALID_PAGE_TOKEN", bad
    page = await stub.ListEvents(pb.ListEventsRequest(page_size=1, page_token=token))
    assert [e.position for e in page.events] == [2]


async def test_page_tokens_outlive_a_restart(tmp_path):
    settings = Settings(grpc_listen="127.0.0.1:0", gateway=False, db=tmp_path / "poet.db")
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            await publish(stub, *(event("tick.tock") for _ in range(3)))
            token = (await stub.ListEvents(pb.ListEventsRequest(page_size=1))).next_page_token
    finally:
        await server.stop(grace=1)
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            page = await stub.ListEvents(pb.ListEventsRequest(page_size=1, page_token=token))
            assert [e.position for e in page.events] == [2]
    finally:
        await server.stop(grace=1)


# -- 3. resume positions beyond the log ----------------------------------------------

async def test_stream_after_a_position_beyond_the_log_is_out_of_range(stub):
    await publish(stub, event("one.event"), event("two.event"))
    for after in (3, 10**6, 2**63 - 1):
        failure = await refused(lambda: stub.StreamEvents(pb.StreamEventsRequest(after_position=after)),
                                grpc.StatusCode.OUT_OF_RANGE)
        info = details(failure)["ErrorInfo"]
        assert info.reason == "POSITION_BEYOND_END"
        assert info.metadata["last_position"] == "2" and info.metadata["requested_position"] == str(after)
    # The last position itself is fine: the stream waits there for what comes next.
    call = stub.StreamEvents(pb.StreamEventsRequest(after_position=2))
    async for item in call:
        assert item.checkpoint.position == 2 and item.checkpoint.caught_up
        break
    await publish(stub, event("three.event"))
    events, _ = await read_stream(call, 1)
    assert [e.position for e in events] == [3]
    call.cancel()


async def test_stream_beyond_an_empty_log_is_out_of_range(stub):
    failure = await refused(lambda: stub.StreamEvents(pb.StreamEventsRequest(after_position=1)),
                            grpc.StatusCode.OUT_OF_RANGE)
    assert details(failure)["ErrorInfo"].metadata["last_position"] == "0"


# -- 4. messages nested deeper than protobuf parses ----------------------------------

async def test_publish_nested_past_protobufs_limit_is_invalid_argument(channel, stub):
    await publish(stub, event("seed.event"))
    failure = await refused(lambda: raw_call(channel, "/poet.v1.PoetService/PublishEvents",
                                             publish_bytes(nested_struct(200))))
    [violation] = details(failure)["BadRequest"].field_violations
    assert violation.field == "request" and "nests deeper than 100 levels" in violation.description
    assert details(failure)["ErrorInfo"].reason == "MALFORMED_REQUEST"
    assert "upb" not in failure.details() and "Traceback" not in failure.details()
    assert await last_position(stub) == 1
    [ok] = await publish(stub, event("after.event"))
    assert ok.position == 2


@pytest.mark.parametrize("depth", [MAX_STRUCT_DEPTH + 1, 31])
async def test_publish_payload_nested_past_what_readers_parse_is_invalid_argument(channel, stub, depth):
    """Parseable, but a stream's batch nests it one level deeper, past the parsers' limit."""
    failure = await refused(lambda: raw_call(channel, "/poet.v1.PoetService/PublishEvents",
                                             publish_bytes(nested_struct(depth))))
    assert violated_fields(failure) == {"events[0].payload"}
    assert await last_position(stub) == 0


async def test_the_deepest_payload_allowed_reads_back_in_batches(channel, stub):
    await raw_call(channel, "/poet.v1.PoetService/PublishEvents", publish_bytes(nested_struct(MAX_STRUCT_DEPTH)))
    batched = stub.StreamEvents(pb.StreamEventsRequest(max_batch_size=10))
    async for item in batched:
        assert [e.type for e in item.batch.events] == ["sensor.reading"]
        break
    batched.cancel()


async def test_enhance_configs_nested_too_deep_are_invalid_argument(stub):
    config = struct_pb2.Struct()
    inner = config
    for _ in range(MAX_STRUCT_DEPTH):
        inner = inner.fields["x"].struct_value
    inner.fields["leaf"].string_value = "y"  # one level past the limit
    failure = await refused(lambda: stub.EnhanceTranspiled(pb.EnhanceTranspiledRequest(
        transpilation_id="t-1", function_name="f", python_code="def f(x):\n    return x\n", config=config)))
    assert violated_fields(failure) == {"config"}
    failure = await refused(lambda: stub.EnhanceExternal(pb.EnhanceExternalRequest(
        function_code="def f(x):\n    return x\n", parameters=config)))
    assert violated_fields(failure) == {"parameters"}


@pytest.mark.parametrize("method", [m.name for m in pb.DESCRIPTOR.services_by_name["PoetService"].methods])
async def test_every_rpc_refuses_bytes_that_do_not_parse(channel, stub, method):
    await publish(stub, event("seed.event"))
    streaming = method == "StreamEvents"
    for garbage in (b"\xff\xff\xff", _field(1, b"abc")[:-1]):  # corrupt, truncated
        failure = await refused(lambda: raw_call(channel, f"/poet.v1.PoetService/{method}", garbage, stream=streaming))
        assert violated_fields(failure) == {"request"}
        assert details(failure)["ErrorInfo"].reason == "MALFORMED_REQUEST"
    assert await last_position(stub) == 1


async def test_health_check_refuses_bytes_that_do_not_parse(channel):
    failure = await refused(lambda: raw_call(channel, "/grpc.health.v1.Health/Check", b"\xff\xff\xff"))
    assert violated_fields(failure) == {"request"}
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_invalid_utf8_is_named(channel):
    bad_type = _field(1, _field(2, b"sensor.\xff"))
    failure = await refused(lambda: raw_call(channel, "/poet.v1.PoetService/PublishEvents", bad_type))
    [violation] = details(failure)["BadRequest"].field_violations
    assert "UTF-8" in violation.description


async def test_many_hostile_calls_leave_the_server_serving(channel, stub):
    await asyncio.gather(*(
        refused(lambda: raw_call(channel, "/poet.v1.PoetService/PublishEvents", publish_bytes(nested_struct(200))))
        for _ in range(20)
    ))
    [ok] = await publish(stub, event("after.event"))
    assert ok.position == 1
