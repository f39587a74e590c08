"""Hostile input to the event API over REST, through a real Envoy to the real
server: timestamps out of range, forged page tokens, resume positions beyond the
log, and JSON nested past protobuf's limit. Each is a JSON error with the status's
code and details, stores nothing, and the next valid call succeeds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import httpx
import pytest

from gateway_support import start_real_service, stop_real_service
from test_rest_service import _details
from test_rest_service import _error as rest_error
from poet_grpc.api.interceptors.validation import MAX_STRUCT_DEPTH

pytestmark = pytest.mark.asyncio(loop_scope="module")

DAY = 86400.0


def _error(response: httpx.Response, status: int, code: int) -> dict:
    body = rest_error(response, status, code)
    assert "upb" not in response.text  # no parser internals
    return body


def _fields(body: dict) -> set[str]:
    return {v["field"] for v in _details(body)["BadRequest"]["field_violations"]}


async def _publish(client: httpx.AsyncClient, *events: dict) -> httpx.Response:
    return await client.post("/api/v1/events:publish", json={"events": list(events)})


async def _last_position(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/v1/events", params={"page_size": 1000})
    assert response.status_code == 200, response.text
    events = response.json().get("events", [])
    return int(events[-1]["position"]) if events else 0


async def _still_serving(client: httpx.AsyncClient, before: int) -> None:
    """Nothing was stored, and the next valid publish is the next position."""
    assert await _last_position(client) == before
    response = await _publish(client, {"type": "after.event"})
    assert response.status_code == 200, response.text
    assert int(response.json()["results"][0]["position"]) == before + 1


async def _open_stream(client: httpx.AsyncClient, path: str, params: dict, frames: int = 0):
    """(status, JSON error body or the first `frames` SSE frames) of a stream."""

    async def read():
        async with client.stream("GET", path, params=params) as response:
            if response.status_code != 200:
                return response.status_code, json.loads(await response.aread())
            got = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[len("data: "):]))
                    if len(got) >= frames:
                        return 200, got
        return response.status_code, got

    return await asyncio.wait_for(read(), 10)


def nested(levels: int) -> dict:
    """{"x": {"x": ... {"leaf": "y"}}}: `levels` objects."""
    value: dict = {"leaf": "y"}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


# -- 1. timestamps ----------------------------------------------------------------

@pytest.mark.parametrize("stamp", ["10000-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
async def test_publish_timestamps_out_of_range_are_400(client, stamp):
    before = await _last_position(client)
    body = _error(await _publish(client, {"type": "ok.event"}, {"type": "ok.event", "timestamp": stamp}), 400, 3)
    assert "events[1].timestamp" in body["message"]  # the gateway refuses it, naming the field
    await _still_serving(client, before)


async def test_list_time_bounds_out_of_range_are_400(client):
    body = _error(await client.get("/api/v1/events", params={"start_time": "9999-12-31T23:59:59-01:00"}), 400, 3)
    assert "start_time" in body["message"]


async def test_the_last_valid_timestamp_reads_back_in_lists_and_streams(client):
    response = await _publish(client, {"type": "far.future", "timestamp": "9999-12-31T23:59:59.999999999Z"})
    assert response.status_code == 200, response.text
    position = int(response.json()["results"][0]["position"])
    listed = await client.get("/api/v1/events", params={"page_size": 1000})
    assert listed.status_code == 200, listed.text
    assert listed.json()["events"][-1]["timestamp"] == "9999-12-31T23:59:59.999999999Z"
    status, frames = await _open_stream(client, "/api/v1/events:stream", {"after_position": position - 1}, 1)
    assert status == 200 and frames[0]["event"]["timestamp"] == "9999-12-31T23:59:59.999999999Z"


async def test_retention_goes_by_append_time_over_rest(database):
    service = await start_real_service(database)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            old = "2001-01-01T00:00:00Z"
            response = await _publish(client, {"type": "far.future", "timestamp": "9999-12-31T23:59:59Z"},
                                      *({"id": f"old-{n}", "type": "old.claim", "timestamp": old} for n in range(3)))
            assert response.status_code == 200, response.text
            retention = service.server.core.retention
            assert await retention.run_once() == 0  # just appended, whatever they claim
            assert await retention.run_once(now=time.time() + 31 * DAY) == 3
            listed = (await client.get("/api/v1/events")).json()["events"]
            assert [e["id"] for e in listed] == ["old-2"]
    finally:
        await stop_real_service(service)


# -- 2. page tokens ----------------------------------------------------------------

def _forged(after: int, filters: list) -> str:
    digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
    raw = json.dumps({"a": after, "f": digest}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "path, filters",
    [
        ("/api/v1/events", ["", "", "", None, None]),
        ("/api/v1/functions/calc/events", ["calc", "", "", None, None]),
        ("/api/v1/functions/calc/versions", ["calc"]),
        ("/api/v1/dead-letters", [""]),
    ],
)
@pytest.mark.parametrize("after", [2**63, 1])
async def test_forged_page_tokens_are_400_invalid_page_token(client, path, filters, after):
    before = await _last_position(client)
    body = _error(await client.get(path, params={"page_size": 1, "page_token": _forged(after, filters)}), 400, 3)
    assert _details(body)["ErrorInfo"]["reason"] == "INVALID_PAGE_TOKEN"
    assert _fields(body) == {"page_token"}
    await _still_serving(client, before)


async def test_an_edited_page_token_is_400(client):
    await _publish(client, {"type": "tick.tock"}, {"type": "tick.tock"})
    token = (await client.get("/api/v1/events", params={"page_size": 1})).json()["next_page_token"]
    edited = token[:4] + ("A" if token[4] != "A" else "B") + token[5:]
    body = _error(await client.get("/api/v1/events", params={"page_size": 1, "page_token": edited}), 400, 3)
    assert _details(body)["ErrorInfo"]["reason"] == "INVALID_PAGE_TOKEN"
    good = await client.get("/api/v1/events", params={"page_size": 1, "page_token": token})
    assert good.status_code == 200 and good.json()["events"][0]["position"] == "2"


# -- 3. resume positions beyond the log ---------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/events:stream", "/api/v1/functions/calc/events:stream"])
async def test_stream_after_a_position_beyond_the_log_is_out_of_range(client, path):
    last = await _last_position(client)
    status, body = await _open_stream(client, path, {"after_position": last + 1})
    assert status == 400 and body["code"] == 11, body  # OUT_OF_RANGE
    info = _details(body)["ErrorInfo"]
    assert info["reason"] == "POSITION_BEYOND_END"
    assert info["metadata"]["last_position"] == str(last)
    assert info["metadata"]["requested_position"] == str(last + 1)
    # The last position itself is fine.
    status, frames = await _open_stream(client, path, {"after_position": last}, 1)
    assert status == 200 and frames[0]["checkpoint"]["position"] == str(last)
    await _still_serving(client, last)


# -- 4. JSON nested past protobuf's limit --------------------------------------------

@pytest.mark.parametrize("levels", [40, 60])
async def test_publish_payload_nested_past_protobufs_limit_is_400(client, levels):
    """Envoy turns the JSON into a message the server's parser refuses (was 500 UNKNOWN
    with the parser's text)."""
    before = await _last_position(client)
    body = _error(await _publish(client, {"type": "deep.event", "payload": nested(levels)}), 400, 3)
    assert _fields(body) == {"request"}
    assert "nests deeper than 100 levels" in _details(body)["BadRequest"]["field_violations"][0]["description"]
    assert _details(body)["ErrorInfo"]["reason"] == "MALFORMED_REQUEST"
    await _still_serving(client, before)


async def test_publish_payload_nested_past_what_readers_parse_is_400(client):
    before = await _last_position(client)
    body = _error(await _publish(client, {"type": "deep.event", "payload": nested(MAX_STRUCT_DEPTH + 1)}), 400, 3)
    assert _fields(body) == {"events[0].payload"}
    await _still_serving(client, before)


async def test_json_deeper_than_the_gateway_parses_is_400(client):
    before = await _last_position(client)
    _error(await _publish(client, {"type": "deep.event", "payload": nested(200)}), 400, 3)
    await _still_serving(client, before)


async def test_enhance_config_nested_past_protobufs_limit_is_400(client):
    body = _error(await client.post("/v1/aitomatic/enhance", json={
        "transpilation_id": "t-deep", "function_name": "f", "python_code": "def f(x):\n    return x\n",
        "config": nested(40)}), 400, 3)
    assert _fields(body) == {"request"}
    body = _error(await client.post("/v1/aitomatic/enhance", json={
        "transpilation_id": "t-deep", "function_name": "f", "python_code": "def f(x):\n    return x\n",
        "config": nested(MAX_STRUCT_DEPTH + 1)}), 400, 3)
    assert _fields(body) == {"config"}


async def test_the_deepest_payload_allowed_streams_back_in_batches(client):
    response = await _publish(client, {"type": "deep.event", "payload": nested(MAX_STRUCT_DEPTH)})
    assert response.status_code == 200, response.text
    position = int(response.json()["results"][0]["position"])
    status, frames = await _open_stream(client, "/api/v1/events:stream",
                                        {"after_position": position - 1, "max_batch_size": 10}, 1)
    assert status == 200, frames
    [deep] = [e for e in frames[0]["batch"]["events"] if e["type"] == "deep.event"]
    assert deep["payload"] == nested(MAX_STRUCT_DEPTH)
