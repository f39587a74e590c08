"""Server-Sent Events ids and Last-Event-ID through a real Envoy, its HTTP side
and the real server: every frame's id is the position to resume after; a
reconnect with Last-Event-ID gets exactly what came after it, also when the
connection was cut mid-stream; bad ids are a clear 400; auth and the audit see
streams as any other call."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import pytest_asyncio

from auth_support import API_KEYS, write_auth_file
from gateway_support import Frame, caught_up, parse_sse, sse_frames, start_real_service, stop_real_service

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _publish(client: httpx.AsyncClient, function_name: str, count: int, kind: str = "sse.id") -> list[int]:
    response = await client.post("/api/v1/events:publish", json={
        "events": [{"type": kind, "function_name": function_name, "payload": {"n": n}} for n in range(count)]})
    assert response.status_code == 200, response.text
    return [int(r["position"]) for r in response.json()["results"]]


def _events(frames: list[Frame]) -> list[int]:
    return [int(f.data["event"]["position"]) for f in frames if f.kind == "event"]


async def test_every_frame_has_the_position_to_resume_after_as_its_id(client) -> None:
    positions = await _publish(client, "ids_a", 3)
    frames = await sse_frames(client, "/api/v1/functions/ids_a/events:stream", until=caught_up)
    assert [f.kind for f in frames] == ["event", "event", "event", "checkpoint"]
    assert [f.id for f in frames[:3]] == [str(p) for p in positions]
    assert frames[3].id == frames[3].data["checkpoint"]["position"]
    assert int(frames[3].id) >= positions[-1]

    batches = await sse_frames(client, "/api/v1/functions/ids_a/events:stream", {"max_batch_size": 2},
                               until=caught_up)
    for frame in batches[:-1]:
        assert frame.kind == "batch" and frame.id == frame.data["batch"]["events"][-1]["position"]


async def test_last_event_id_resumes_exactly_after_it(client) -> None:
    positions = await _publish(client, "ids_b", 5)
    frames = await sse_frames(client, "/api/v1/functions/ids_b/events:stream",
                              headers={"last-event-id": str(positions[1])}, until=caught_up)
    assert _events(frames) == positions[2:]
    # The position of the last event itself: nothing more, a checkpoint says so.
    frames = await sse_frames(client, "/api/v1/functions/ids_b/events:stream",
                              headers={"last-event-id": str(positions[-1])}, until=caught_up)
    assert _events(frames) == [] and frames[-1].id == frames[-1].data["checkpoint"]["position"]


async def test_last_event_id_wins_over_after_position_and_live_only(client) -> None:
    """An EventSource reconnects to the URL it was opened with, after_position and
    live_only included: the header is the newer position."""
    positions = await _publish(client, "ids_c", 5)
    path = "/api/v1/functions/ids_c/events:stream"
    last = {"last-event-id": str(positions[2])}
    frames = await sse_frames(client, path, {"after_position": positions[0]}, headers=last, until=caught_up)
    assert _events(frames) == positions[3:]
    frames = await sse_frames(client, path, {"live_only": "true"}, headers=last, until=caught_up)
    assert _events(frames) == positions[3:]
    # Without the header (or with an empty one) the query string applies as before.
    frames = await sse_frames(client, path, {"after_position": positions[0]}, until=caught_up)
    assert _events(frames) == positions[1:]
    frames = await sse_frames(client, path, {"after_position": positions[3]}, headers={"last-event-id": ""},
                              until=caught_up)
    assert _events(frames) == positions[4:]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "0x10", "+3", "9223372036854775808",
                                 "99999999999999999999999999999999", "1 2"])
async def test_a_bad_last_event_id_is_a_clear_400(client, bad) -> None:
    response = await client.get("/api/v1/events:stream", headers={"last-event-id": bad})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 3 and body["message"].startswith("Last-Event-ID must be a log position")
    assert json.dumps(bad) in body["message"]
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}
    assert details["ErrorInfo"]["reason"] == "INVALID_LAST_EVENT_ID"
    assert details["BadRequest"]["field_violations"][0]["field"] == "Last-Event-ID"


async def test_a_last_event_id_beyond_the_log_is_out_of_range(client) -> None:
    last = (await _publish(client, "ids_d", 1))[0]
    response = await client.get("/api/v1/events:stream", headers={"last-event-id": str(last + 10)})
    assert response.status_code == 400 and response.json()["code"] == 11  # OUT_OF_RANGE, as after_position
    reasons = [d.get("reason") for d in response.json()["details"]]
    assert "POSITION_BEYOND_END" in reasons


async def test_a_cut_stream_resumes_from_its_last_id_without_loss_or_duplicates(client, real_service) -> None:
    path = "/api/v1/functions/ids_cut/events:stream"
    published = await _publish(client, "ids_cut", 5)
    more = asyncio.ensure_future(_publish_slowly(client, "ids_cut", 20, published))
    received: list[Frame] = []
    try:
        # The first connection is cut mid-stream by the side, as a network failure would.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await _read_until_cut(client, path, received, real_service)
        assert len(_events(received)) >= 8
        # Reconnects with the last id it got, until everything published is there.
        while not (more.done() and _events(received)[-1:] == published[-1:]):
            received += await sse_frames(client, path, headers={"last-event-id": received[-1].id},
                                         until=lambda f: caught_up(f) and more.done(), timeout=15)
    finally:
        await more
    assert _events(received) == published  # in order, none lost, none twice


async def _publish_slowly(client: httpx.AsyncClient, function_name: str, count: int, into: list[int]) -> None:
    for _ in range(count):
        into += await _publish(client, function_name, 1)
        await asyncio.sleep(0.02)


async def _read_until_cut(client: httpx.AsyncClient, path: str, received: list[Frame], service) -> None:
    """Reads frames; once 8 events are in, cuts the connection and reads on until that fails."""
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                received.extend(parse_sse(block + "\n\n"))
            if len(_events(received)) >= 8:
                service.gateway.http_side.abort_connections()


async def test_an_idle_reconnect_resumes_after_the_checkpoint(client) -> None:
    """Events that the filter skips still move the checkpoint, and its id: a
    reconnect with it does not read them again."""
    mine = await _publish(client, "ids_idle", 1)
    others = await _publish(client, "ids_someone_else", 3)
    frames = await sse_frames(client, "/api/v1/functions/ids_idle/events:stream",
                              headers={"last-event-id": str(mine[0] - 1)}, until=caught_up)
    assert _events(frames) == mine
    assert int(frames[-1].id) >= others[-1]  # past the skipped events
    later = await _publish(client, "ids_idle", 1)
    frames = await sse_frames(client, "/api/v1/functions/ids_idle/events:stream",
                              headers={"last-event-id": frames[-1].id}, until=lambda f: bool(_events(f)))
    assert _events(frames) == later


# -- auth, rate limits and the audit see streams as any other call -----------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guarded(tmp_path_factory, new_database):
    folder = tmp_path_factory.mktemp("sse-auth")
    credentials = write_auth_file(folder)
    service = await start_real_service(new_database(), auth_file=str(credentials.auth_file),
                                       audit_log=str(folder / "audit.log"))
    service.audit_path = folder / "audit.log"
    yield service
    await stop_real_service(service)


async def test_streams_need_a_credential_and_leave_an_audit_line(guarded) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as http:
        refused = await http.get("/api/v1/events:stream")
        assert refused.status_code == 401 and refused.json()["code"] == 16
        assert refused.headers["www-authenticate"] == "Bearer"
        viewer = {"authorization": f"Bearer {API_KEYS['viewer']}", "x-request-id": "sse-audit-1"}
        frames = await sse_frames(http, "/api/v1/events:stream", {"event_type": "x.*"}, headers=viewer,
                                  until=caught_up)
        assert frames[-1].id is not None
    for _ in range(100):  # a stream's line is written when it ends, just after the client hung up
        lines = [json.loads(line) for line in guarded.audit_path.read_text().splitlines()]
        streams = [line for line in lines if line["rpc"].endswith("StreamEvents")]
        if len(streams) == 2:
            break
        await asyncio.sleep(0.05)
    assert [s["auth"] for s in streams][:1] == ["refused"]
    ok = streams[-1]
    assert ok["principal"] and ok["http_method"] == "GET" and ok["http_path"] == "/api/v1/events:stream"
    assert ok["forwarded_for"]
