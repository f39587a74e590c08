"""REST/JSON and SSE through a real Envoy to a real grpc.aio server."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from poet_grpc._gen.poet.v1 import poet_service_pb2, poet_service_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
async def client(base_url: str):
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        yield client


async def test_list_domains_is_json_with_snake_case_names(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/domains")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    domains = response.json()["domains"]
    assert [d["name"] for d in domains] == ["base_reliability", "ml_monitoring"]
    assert domains[0]["parameters"][0] == {
        "name": "max_retries",
        "description": "Attempts after the first.",
        "default_value": 3,
    }
    assert domains[1]["parameters"] == []  # always_print_primitive_fields


async def test_get_version_prints_enums_lowercase_and_int64_as_string(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/functions/f/versions/v1")
    assert response.status_code == 200
    version = response.json()["version"]
    assert version["function_name"] == "f"
    assert version["status"] == "active"
    assert version["current"] is True
    assert version["metrics"]["feedback_count"] == "7"
    assert version["parent_version"] == ""


async def test_not_found_is_404_with_error_info(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/functions/g/versions/v9")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == 5
    assert "v9" in body["message"]
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert detail["reason"] == "VERSION_NOT_FOUND"
    assert detail["domain"] == "poet.v1"
    assert detail["metadata"] == {"function_name": "g", "version": "v9"}


async def test_invalid_argument_is_400_with_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/functions/enhance", json={"function_name": "x", "original_code": "pass"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 3
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    # preserve_proto_field_names applies to error details too.
    (violation,) = detail["field_violations"]
    assert violation["field"] == "original_code"


async def test_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing/here")
    assert response.status_code == 404


async def test_unknown_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/domains", params={"bogus": "1"})
    assert response.status_code == 400
    assert "bogus" in response.text


async def test_malformed_json_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/functions/enhance",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400


async def _sse_frames(client: httpx.AsyncClient, path: str, count: int) -> list[dict]:
    frames: list[dict] = []

    async def read() -> None:
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[len("data: "):]))
                    if len(frames) == count:
                        return

    # The server keeps the stream open: stop reading after `count` frames.
    await asyncio.wait_for(read(), timeout=5)
    return frames


@pytest.mark.parametrize(
    ("path", "function_name"),
    [("/api/v1/functions/f/events:stream", "f"), ("/api/v1/events:stream", "")],
)
async def test_stream_paths_are_server_sent_events(
    client: httpx.AsyncClient, path: str, function_name: str
) -> None:
    frames = await _sse_frames(client, path, 3)
    assert [f["event"]["position"] for f in frames] == ["1", "2", "3"]
    assert {f["event"]["function_name"] for f in frames} == {function_name}


async def test_stream_rejects_unknown_query_parameter(client: httpx.AsyncClient) -> None:
    # The per-route transcoder config repeats the request validation options.
    response = await client.get("/api/v1/events:stream", params={"bogus": "1"})
    assert response.status_code == 400


async def test_native_grpc_passes_through(gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.http_port}") as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        response = await stub.ListDomains(poet_service_pb2.ListDomainsRequest(), timeout=5)
    assert len(response.domains) == 2
