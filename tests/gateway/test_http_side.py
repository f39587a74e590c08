"""The HTTP side behind a real Envoy, with a recording gRPC upstream: REST query
strings become the StreamEventsRequest the transcoder built, frames carry ids
and the transcoder's JSON, errors keep the gateway's shape, the caller's headers
reach the server, /metrics; and the side alone on its socket: limits, slow and
stalled clients."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from typing import AsyncIterator

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway_support import parse_sse, sse_frames
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.api import http_side
from poet_grpc.api.gateway import EnvoyGateway
from poet_grpc.api.http_side import HttpSide

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _rich_event(position: int, *, payload: bool = True) -> events_pb2.Event:
    event = events_pb2.Event(
        id="é-1", type="a.b", source="s", correlation_id="c", causation_id="d", position=position,
        function_name="m.f", timestamp=timestamp_pb2.Timestamp(seconds=1700000000, nanos=123456000),
        metadata=events_pb2.EventMetadata(version="v1", service="x", environment="dev", principal="p"),
    )
    if payload:
        event.payload.update({"n": 1, "neg": -3.0, "frac": 0.1, "big": 1e15, "i53": 9007199254740992.0,
                              "tiny": 1e-7, "s": "mód <b>&\"'\\\n\t\u2028\x01", "list": [1, "x", None, True],
                              "nested": {"deep": 2}})
    return event


def _status(code: int, message: str, *details) -> bytes:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status.SerializeToString()


class RecordingService(poet_service_pb2_grpc.PoetServiceServicer):
    """StreamEvents by scenario (the event_type asked for); records every request."""

    def __init__(self) -> None:
        self.requests: list[pb.StreamEventsRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.ended: asyncio.Queue[str] = asyncio.Queue()

    async def ListEvents(self, request, context):
        return pb.ListEventsResponse(events=[_rich_event(1), _rich_event(2, payload=False)])

    async def StreamEvents(self, request, context):
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        scenario = request.event_type
        if scenario == "refuse":
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7))
            info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="poet.v1")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", trailing_metadata=(
                ("grpc-status-details-bin", _status(code_pb2.RESOURCE_EXHAUSTED, "slow down", info, retry)),
                ("retry-after", "7"), ("www-authenticate", "Bearer")))
        if scenario == "rich":
            yield pb.StreamEventsResponse(event=_rich_event(1))
            yield pb.StreamEventsResponse(event=_rich_event(2, payload=False))
            yield pb.StreamEventsResponse(checkpoint=events_pb2.StreamCheckpoint(position=2, caught_up=True))
            yield pb.StreamEventsResponse(batch=events_pb2.EventBatch(events=[
                events_pb2.Event(type="x", position=3), events_pb2.Event(type="y", position=5)]))
            return
        if scenario == "fail-mid":
            yield pb.StreamEventsResponse(event=events_pb2.Event(type="x", position=1))
            info = error_details_pb2.ErrorInfo(reason="POSITION_EXPIRED", domain="poet.v1")
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "expired", trailing_metadata=(
                ("grpc-status-details-bin", _status(code_pb2.OUT_OF_RANGE, "expired", info)),))
        if scenario in ("hold", "flood"):
            context.add_done_callback(lambda _: self.ended.put_nowait(scenario))
            blob = "x" * 60_000
            position = 0
            while True:
                position += 1
                event = events_pb2.Event(type=scenario, position=position)
                if scenario == "flood":
                    event.payload.update({"blob": blob})
                    yield pb.StreamEventsResponse(event=event)
                    await asyncio.sleep(0)
                else:
                    yield pb.StreamEventsResponse(checkpoint=events_pb2.StreamCheckpoint(position=position))
                    await asyncio.sleep(3600)
        yield pb.StreamEventsResponse(checkpoint=events_pb2.StreamCheckpoint(position=request.after_position,
                                                                             caught_up=True))


class Metrics:
    def __init__(self) -> None:
        self.fail = False

    def __call__(self) -> tuple[bytes, str]:
        if self.fail:
            raise RuntimeError("collector broke")
        return b"# TYPE poet_up gauge\npoet_up 1\n", "text/plain; version=0.0.4; charset=utf-8"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[tuple[RecordingService, str]]:
    service = RecordingService()
    server = grpc.aio.server()
    poet_service_pb2_grpc.add_PoetServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, f"127.0.0.1:{port}"
    await server.stop(grace=None)


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    return Metrics()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def side_gateway(upstream, metrics) -> AsyncIterator[EnvoyGateway]:
    async with EnvoyGateway(upstream[1], "127.0.0.1:0", metrics=metrics) as gateway:
        yield gateway


@pytest_asyncio.fixture(loop_scope="module")
async def http(side_gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{side_gateway.http_port}", timeout=10) as client:
        yield client


def _gateway_error(response: httpx.Response, status: int, code: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code and body["message"], body
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert (info["reason"], info["domain"]) == (reason, "poet.v1")
    return body


# -- the query string, as Envoy's transcoder maps it -----------------------------------
# Expected values are what Envoy 1.40's transcoder did with the same requests.

MAPPED = [
    ("/api/v1/events:stream", {}),
    ("/api/v1/events:stream?afterPosition=3", {"after_position": "3"}),
    ("/api/v1/events:stream?after_position=3&after_position=4", {"after_position": "4"}),
    ("/api/v1/events:stream?after_position=1&afterPosition=2", {"after_position": "2"}),
    ("/api/v1/events:stream?after_position=%2B3", {"after_position": "3"}),
    ("/api/v1/events:stream?after_position=007", {"after_position": "7"}),
    ("/api/v1/events:stream?after_position=-1", {"after_position": "-1"}),
    ("/api/v1/events:stream?after_position=9223372036854775807", {"after_position": "9223372036854775807"}),
    ("/api/v1/events:stream?live_only=1", {"live_only": True}),
    ("/api/v1/events:stream?live_only=True", {"live_only": True}),
    ("/api/v1/events:stream?live_only=yes", {"live_only": True}),
    ("/api/v1/events:stream?live_only=t", {"live_only": True}),
    ("/api/v1/events:stream?live_only=false", {}),
    ("/api/v1/events:stream?live_only=N", {}),
    ("/api/v1/events:stream?max_batch_size=-2147483648", {"max_batch_size": -2147483648}),
    ("/api/v1/events:stream?event_type=a+b%20c%2A", {"event_type": "a+b c*"}),
    ("/api/v1/events:stream?event_type=", {}),
    ("/api/v1/events:stream?event_type=a=b", {"event_type": "a=b"}),
    ("/api/v1/events:stream?eventType=x", {"event_type": "x"}),
    ("/api/v1/events:stream?%66unction_name=q", {"function_name": "q"}),
    ("/api/v1/events:stream?function_name=%C3%B3", {"function_name": "ó"}),
    ("/api/v1/events:stream?bogus", {}),  # no "=": ignored
    ("/api/v1/events:stream?=x&&", {}),
    ("/api/v1/functions/m%C3%B3d/events:stream", {"function_name": "mód"}),
    ("/api/v1/functions/a%2Fb/events:stream", {"function_name": "a/b"}),
    ("/api/v1/functions/f/events:stream?function_name=g", {"function_name": "g"}),
]


@pytest.mark.parametrize(("target", "expected"), MAPPED)
async def test_query_strings_map_as_the_transcoder_maps_them(http, upstream, target, expected) -> None:
    service, _ = upstream
    before = len(service.requests)
    response = await http.get(target)
    assert response.status_code == 200, response.text
    assert len(service.requests) == before + 1
    assert json_format.MessageToDict(service.requests[-1], preserving_proto_field_name=True) == expected


REFUSED = [
    ("after_position=abc", 'after_position: invalid value "abc" for type TYPE_INT64'),
    ("afterPosition=abc", 'after_position: invalid value "abc" for type TYPE_INT64'),
    ("after_position=", 'after_position: invalid value "" for type TYPE_INT64'),
    ("after_position=9223372036854775808", 'after_position: invalid value "9223372036854775808" for type TYPE_INT64'),
    ("after_position=0x10", 'after_position: invalid value "0x10" for type TYPE_INT64'),
    ("after_position=1e2", 'after_position: invalid value "1e2" for type TYPE_INT64'),
    ("after_position=--1", 'after_position: invalid value "--1" for type TYPE_INT64'),
    ("after_position=%203", 'after_position: invalid value " 3" for type TYPE_INT64'),
    ("max_batch_size=2.0", 'max_batch_size: invalid value "2.0" for type TYPE_INT32'),
    ("max_batch_size=2147483648", 'max_batch_size: invalid value "2147483648" for type TYPE_INT32'),
    ("live_only=off", 'live_only: invalid value "off" for type TYPE_BOOL'),
    ("live_only=", 'live_only: invalid value "" for type TYPE_BOOL'),
    ("bogus=1", 'Could not find field "bogus" in the type "poet.v1.StreamEventsRequest".'),
    ("bogus=", 'Could not find field "bogus" in the type "poet.v1.StreamEventsRequest".'),
    ("Event_Type=x", 'Could not find field "Event_Type" in the type "poet.v1.StreamEventsRequest".'),
    ("%62ogus=1", 'Could not find field "%62ogus" in the type "poet.v1.StreamEventsRequest".'),
    ("a.b.c=1", 'Could not find field "a" in the type "poet.v1.StreamEventsRequest".'),
    ("event_type.x=1", 'Encountered a non-leaf field "event_type" that is not a message while parsing a field path'),
    # The transcoder passed bad UTF-8 on (the server then failed with 500); the side refuses it.
    ("event_type=%C3", "event_type: invalid value, not UTF-8 once percent-decoded"),
]


@pytest.mark.parametrize(("query", "message"), REFUSED)
async def test_bad_query_strings_get_the_gateways_400(http, upstream, query, message) -> None:
    service, _ = upstream
    before = len(service.requests)
    body = _gateway_error(await http.get(f"/api/v1/events:stream?{query}"), 400, 3, "MALFORMED_REQUEST")
    assert body["message"] == message
    assert len(service.requests) == before  # the server never saw it


async def test_other_methods_on_stream_paths_are_404_as_before(http) -> None:
    _gateway_error(await http.post("/api/v1/events:stream", json={}), 404, 5, "UNKNOWN_PATH")


# -- frames: ids and the transcoder's JSON ------------------------------------------------

async def test_frames_carry_ids_and_the_transcoders_json(http) -> None:
    response = await http.get("/api/v1/events:stream", params={"event_type": "rich"})
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    frames = parse_sse(response.text)
    assert [(f.id, f.kind) for f in frames] == [("1", "event"), ("2", "event"), ("2", "checkpoint"), ("5", "batch")]
    assert response.text.startswith("id: 1\ndata: {")

    # The oracle: ListEvents prints the same Event messages through the transcoder.
    listed = (await http.get("/api/v1/events")).text
    listed_events = json.loads(listed)["events"]
    streamed = [f.data["event"] for f in frames[:2]]
    # Same values and number types (1, not 1.0); fields in the same order.
    assert json.dumps(streamed, sort_keys=True) == json.dumps(listed_events, sort_keys=True)
    assert [list(e) for e in streamed] == [list(e) for e in listed_events]
    # Byte for byte, where no free-form Struct (whose key order is Envoy's hash order) is involved.
    second = response.text.split("\n\n")[1].split("data: ", 1)[1]
    assert second == '{"event":' + listed[listed.rindex('{"id"'):listed.rindex("]")] + "}"
    assert json.dumps(frames[2].data) == '{"checkpoint": {"position": "2", "caught_up": true}}'


async def test_an_error_before_the_stream_is_the_transcoders_json_error(http) -> None:
    response = await http.get("/api/v1/events:stream", params={"event_type": "refuse"})
    body = _gateway_error(response, 429, 8, "RATE_LIMITED")
    assert body["message"] == "slow down"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "7s"} in body["details"]
    assert response.headers["retry-after"] == "7" and response.headers["www-authenticate"] == "Bearer"
    assert "grpc-status" not in response.headers


async def test_an_error_mid_stream_is_an_error_event(http) -> None:
    response = await http.get("/api/v1/events:stream", params={"event_type": "fail-mid"})
    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert [(f.id, f.event) for f in frames] == [("1", "message"), (None, "error")]
    assert frames[1].data["code"] == 11 and frames[1].data["message"] == "expired"
    assert frames[1].data["details"][0]["reason"] == "POSITION_EXPIRED"
    assert "event: error\ndata: {" in response.text


async def test_the_callers_headers_reach_the_server_and_others_do_not(http, upstream) -> None:
    service, _ = upstream
    headers = {"authorization": "Bearer t0ken", "x-request-id": "r-42", "x-client-id": "page",
               "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "a=b",
               "x-correlation-id": "c-9", "cookie": "session=secret", "x-other": "no"}
    response = await http.get("/api/v1/functions/f/events:stream?event_type=x", headers=headers)
    assert response.status_code == 200
    seen = service.metadata[-1]
    for name in ("authorization", "x-request-id", "x-client-id", "traceparent", "tracestate", "x-correlation-id"):
        assert seen[name] == headers[name]
    assert seen["x-forwarded-for"]  # Envoy's (for a loopback client, the host's address): the rate limit's key
    assert (seen["x-envoy-original-method"], seen["x-envoy-original-path"]) == (
        "GET", "/api/v1/functions/f/events:stream?event_type=x")
    assert "cookie" not in seen and "x-other" not in seen and "last-event-id" not in seen


async def test_a_client_that_hangs_up_ends_the_servers_stream(http, upstream) -> None:
    service, _ = upstream
    frames = await sse_frames(http, "/api/v1/events:stream", {"event_type": "hold"}, until=bool)
    assert frames[0].id == "1"
    assert await asyncio.wait_for(service.ended.get(), 5) == "hold"


async def test_an_unreachable_server_is_the_gateways_503() -> None:
    async with EnvoyGateway("127.0.0.1:1", "127.0.0.1:0") as gateway:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10) as client:
            response = await client.get("/api/v1/events:stream")
            body = _gateway_error(response, 503, 14, "UPSTREAM_UNAVAILABLE")
            assert response.headers["retry-after"] == "1"
            assert "127.0.0.1:1" not in response.text and "sock" not in response.text
            assert body["details"][1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retry_delay": "1s"}
            # Without metrics, /metrics is the gateway's 404.
            _gateway_error(await client.get("/metrics"), 404, 5, "UNKNOWN_PATH")


# -- /metrics --------------------------------------------------------------------------------

async def test_metrics_come_from_the_callable(http, metrics) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.text == "# TYPE poet_up gauge\npoet_up 1\n"
    metrics.fail = True
    try:
        _gateway_error(await http.get("/metrics"), 500, 13, "METRICS_FAILED")
    finally:
        metrics.fail = False
    _gateway_error(await http.post("/metrics"), 404, 5, "UNKNOWN_PATH")  # GET only, as every other path


# -- the side alone, on its socket -------------------------------------------------------------

@pytest_asyncio.fixture(loop_scope="module")
async def side(tmp_path, upstream) -> AsyncIterator[HttpSide]:
    side = HttpSide(upstream[1], metrics=Metrics())
    await side.start(str(tmp_path / "http.sock"))
    yield side
    await side.stop()


async def _exchange(side: HttpSide, request: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(side.socket_path)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10) if read else b""
    writer.close()
    return answer


async def test_the_socket_is_private_and_removed_on_stop(side) -> None:
    path = side.socket_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    await side.stop()
    await side.stop()
    assert not os.path.exists(path)


async def test_an_oversized_request_head_is_431_and_a_bad_one_400(side) -> None:
    # h11 checks the limit between reads, so a head may pass it by up to one read (16 KiB).
    answer = await _exchange(side, b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    answer = await _exchange(side, b"GARBAGE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b'"MALFORMED_REQUEST"' in answer


async def test_a_slow_request_head_is_cut(side, monkeypatch) -> None:
    monkeypatch.setattr(http_side, "HEAD_TIMEOUT_SECONDS", 0.3)
    reader, writer = await asyncio.open_unix_connection(side.socket_path)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert asyncio.get_running_loop().time() - started < 3
    writer.close()
    assert side.open_connections == 0


async def test_past_the_connection_limit_the_answer_is_503(side, monkeypatch) -> None:
    monkeypatch.setattr(http_side, "MAX_CONNECTIONS", 1)
    reader, writer = await asyncio.open_unix_connection(side.socket_path)  # holds the one place
    await asyncio.sleep(0.1)
    answer = await _exchange(side, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower()
    writer.close()
    for _ in range(100):
        if side.open_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert (await _exchange(side, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")).startswith(b"HTTP/1.1 200 ")


async def test_a_client_that_stops_reading_is_cut_and_its_stream_ended(side, upstream, monkeypatch) -> None:
    service, _ = upstream
    monkeypatch.setattr(http_side, "WRITE_STALL_SECONDS", 0.5)
    reader, writer = await asyncio.open_unix_connection(side.socket_path)
    writer.write(b"GET /api/v1/events:stream?event_type=flood HTTP/1.1\r\nhost: x\r\n\r\n")
    await writer.drain()  # and never read
    assert await asyncio.wait_for(service.ended.get(), 10) == "flood"
    assert side.open_connections == 0
    writer.close()


async def test_abort_connections_cuts_open_streams(side, upstream) -> None:
    service, _ = upstream
    reader, writer = await asyncio.open_unix_connection(side.socket_path)
    writer.write(b"GET /api/v1/events:stream?event_type=hold HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    assert side.abort_connections() == 1
    assert await asyncio.wait_for(service.ended.get(), 5) == "hold"
    writer.close()


async def test_stream_request_takes_last_event_id_over_after_position_and_live_only() -> None:
    request = http_side.stream_request(None, "after_position=3&live_only=true", "17")
    assert (request.after_position, request.live_only) == (17, False)
    assert http_side.stream_request(None, "after_position=3", "").after_position == 3  # empty: none
    assert http_side.stream_request("f", "", "0").after_position == 0


async def test_messages_print_numbers_and_escapes_as_the_transcoder() -> None:
    message = pb.StreamEventsResponse(event=events_pb2.Event(type="<x>", position=2))
    message.event.payload.update({"n": 1})
    assert http_side.message_json(message) == (
        '{"event":{"id":"","type":"\\u003cx\\u003e","source":"","correlation_id":"","causation_id":"",'
        '"payload":{"n":1},"position":"2","function_name":""}}')
