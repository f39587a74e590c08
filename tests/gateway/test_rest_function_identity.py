"""Function identity over REST, through a real Envoy to the real server: functions
enhanced with context.module are addressed by their qualified names in the path
(/api/v1/functions/mypkg.text.first/versions), bare names work as before, bad
modules and names are 400, and a lost race for a version number is 409 with
Retry-After and RetryInfo."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALPHA = "def first(items: list, default=None):\n    return items[0] if items else default\n"
BETA = "def first(text: str) -> str:\n    return text.split()[0] if text.split() else ''\n"


def _details(body: dict) -> dict[str, dict]:
    return {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}


async def log_head(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/v1/events", params={"page_size": 1000})
    assert response.status_code == 200, response.text
    events = response.json().get("events", [])
    return int(events[-1]["position"]) if events else 0


async def enhance(client: httpx.AsyncClient, code: str, module: str = "", **fields) -> httpx.Response:
    body = {"function_name": "first", "original_code": code, **fields}
    if module:
        body["context"] = {"module": module}
    return await client.post("/api/v1/functions/enhance", json=body)


async def test_two_modules_get_separate_histories_addressed_by_qualified_paths(client) -> None:
    for module, code in (("alpha.seq", ALPHA), ("beta.text", BETA)):
        response = await enhance(client, code, module)
        assert response.status_code == 200, response.text
        assert (response.json()["function_name"], response.json()["version"]) == (f"{module}.first", "v1")
    for identity, code in (("alpha.seq.first", ALPHA), ("beta.text.first", BETA)):
        listing = await client.get(f"/api/v1/functions/{identity}/versions")
        assert listing.status_code == 200, listing.text
        assert [(v["function_name"], v["version"]) for v in listing.json()["versions"]] == [(identity, "v1")]
        got = await client.get(f"/api/v1/functions/{identity}/versions/current")
        assert got.status_code == 200, got.text
        assert got.json()["version"]["original_code"] == code
        events = (await client.get(f"/api/v1/functions/{identity}/events")).json()["events"]
        assert [(e["type"], e["function_name"], e["payload"]["module"]) for e in events] == [
            ("enhancement.completed", identity, identity.rpartition(".")[0])]
    # A bare name is its own function, at today's paths.
    assert (await client.get("/api/v1/functions/first/versions")).status_code == 404
    bare = await enhance(client, ALPHA)
    assert (bare.json()["function_name"], bare.json()["version"]) == ("first", "v1")
    listing = (await client.get("/api/v1/functions/first/versions")).json()
    assert [(v["function_name"], v["version"]) for v in listing["versions"]] == [("first", "v1")]


async def test_every_addressing_path_takes_a_qualified_name(client) -> None:
    identity = "gamma.util.first"
    assert (await enhance(client, ALPHA, "gamma.util")).status_code == 200
    assert (await enhance(client, ALPHA, "gamma.util", optimize_for="performance")).json()["version"] == "v2"
    base = f"/api/v1/functions/{identity}"
    feedback = await client.post(f"{base}/feedback", json={"version": "v1", "feedback_type": "user", "rating": 4})
    assert feedback.status_code == 200, feedback.text
    deprecated = await client.post(f"{base}/versions/v1:deprecate", json={"reason": "old"})
    assert deprecated.status_code == 200, deprecated.text
    assert deprecated.json()["version"]["status"] == "deprecated"
    activated = await client.post(f"{base}/versions/v1:activate", json={"reason": "rollback"})
    assert activated.status_code == 200, activated.text
    assert activated.json()["previous_version"] == "v2"
    v1 = (await client.get(f"{base}/versions/v1")).json()["version"]
    assert (v1["function_name"], v1["current"], v1["metrics"]["feedback_count"]) == (identity, True, "1")
    events = (await client.get(f"{base}/events", params={"event_type": "version.*"})).json()["events"]
    assert [e["type"] for e in events] == ["version.deprecated", "version.activated"]
    published = await client.post("/api/v1/events:publish", json={
        "events": [{"type": "drift.detected", "function_name": identity, "payload": {"drift_score": 0.1}}]})
    assert published.status_code == 200, published.text
    async with client.stream("GET", f"{base}/events:stream", params={"event_type": "drift.detected"}) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                message = json.loads(line[len("data:"):])
                assert (message["event"]["type"], message["event"]["function_name"]) == ("drift.detected", identity)
                break


async def test_a_non_ascii_module_is_addressed_percent_encoded(client) -> None:
    response = await enhance(client, ALPHA, "paquete.módulo")
    assert response.status_code == 200, response.text
    assert response.json()["function_name"] == "paquete.módulo.first"
    listing = await client.get(f"/api/v1/functions/{quote('paquete.módulo.first')}/versions")
    assert listing.status_code == 200, listing.text
    assert [v["function_name"] for v in listing.json()["versions"]] == ["paquete.módulo.first"]


@pytest.mark.parametrize("module", ["a..b", "1x", "a-b", "a" * 201, "a.b ", "a.class"])
async def test_bad_modules_are_400_naming_context_module_and_store_nothing(client, module) -> None:
    head = await log_head(client)
    response = await enhance(client, ALPHA, module)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3
    assert [v["field"] for v in _details(body)["BadRequest"]["field_violations"]] == ["context.module"]
    assert await log_head(client) == head


@pytest.mark.parametrize("name", ["alpha..first", "1alpha.first", "alpha-seq.first", "alpha.seq.", "alpha.class.first"])
async def test_bad_qualified_names_in_paths_are_400(client, name) -> None:
    for method, path, body in (
        ("GET", f"/api/v1/functions/{name}/versions", None),
        ("GET", f"/api/v1/functions/{name}/versions/v1", None),
        ("POST", f"/api/v1/functions/{name}/versions/v1:activate", {}),
        ("POST", f"/api/v1/functions/{name}/feedback", {"version": "v1", "feedback_type": "user"}),
        ("GET", f"/api/v1/functions/{name}/events", None),
    ):
        response = await client.request(method, path, json=body)
        assert response.status_code == 400, (path, response.text)
        fields = [v["field"] for v in _details(response.json())["BadRequest"]["field_violations"]]
        assert fields == ["function_name"], path


async def test_concurrent_enhancements_over_rest_queue_and_number_without_gaps(client) -> None:
    responses = await asyncio.gather(
        *(enhance(client, ALPHA + f"\n# revision {i}\n", "delta.seq") for i in range(8))
    )
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses if r.status_code != 200]
    listing = (await client.get("/api/v1/functions/delta.seq.first/versions")).json()
    assert [v["version"] for v in listing["versions"]] == [f"v{n}" for n in range(1, 9)]


async def test_a_lost_version_number_race_is_409_with_retry_after(client, real_service, monkeypatch) -> None:
    monkeypatch.setattr(real_service.server.core.enhancements, "_store_version", lambda *args, **kwargs: None)
    head = await log_head(client)
    response = await enhance(client, BETA, "epsilon.text")
    assert response.status_code == 409, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["code"] == 10  # ABORTED
    details = _details(body)
    assert details["ErrorInfo"]["reason"] == "CONCURRENT_ENHANCEMENT"
    seconds = float(details["RetryInfo"]["retry_delay"].rstrip("s"))
    assert 0.1 <= seconds <= 1.0
    assert await log_head(client) == head
