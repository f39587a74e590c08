"""REST through a real Envoy to the REAL server (store, core, interceptors):
every RPC at its documented path, the error contract, probes, the OpenAPI
document, Server-Sent Events with filters, resume and idle streams."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from gateway_support import start_real_service, stop_real_service
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc, probes_pb2, probes_pb2_grpc
from poet_grpc.api.gateway import EnvoyGateway, openapi_path

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def halve(x: float) -> float:\n    return x / 2\n"
DOCUMENT = json.loads(openapi_path().read_text())


def _error(response: httpx.Response, status: int, code: int) -> dict:
    """The google.rpc.Status body of an error response, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    assert "Traceback" not in response.text
    return body


def _details(body: dict) -> dict[str, dict]:
    return {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}


# -- every RPC at its documented path ---------------------------------------

CALLS = [
    # (operationId, method, path, JSON body or query parameters)
    ("Enhance", "POST", "/api/v1/functions/enhance",
     {"function_name": "halve", "original_code": CODE, "domain": "computation"}),
    ("EnhanceTranspiled", "POST", "/v1/aitomatic/enhance",
     {"transpilation_id": "t-1", "python_code": CODE, "function_name": "halve", "dana_source": CODE,
      "config": {"max_retries": 2}}),
    ("EnhanceExternal", "POST", "/v1/external/enhance",
     {"function_code": CODE, "objectives": ["performance"], "client_id": "mlflow"}),
    ("SubmitFunctionFeedback", "POST", "/api/v1/functions/halve/feedback",
     {"version": "v1", "feedback_type": "performance", "rating": 5, "metrics": {"success_rate": 1.0}}),
    ("ListFunctionVersions", "GET", "/api/v1/functions/halve/versions", {"page_size": 10}),
    ("GetFunctionVersion", "GET", "/api/v1/functions/halve/versions/current", None),
    ("DeprecateFunctionVersion", "POST", "/api/v1/functions/halve/versions/v1:deprecate", {"reason": "old"}),
    ("ActivateFunctionVersion", "POST", "/api/v1/functions/halve/versions/v1:activate", {"reason": "rollback"}),
    ("ListFunctionEvents", "GET", "/api/v1/functions/halve/events", {"limit": 2}),
    ("ListEvents", "GET", "/api/v1/events", {"event_type": "version.activated"}),
    ("PublishEvents", "POST", "/api/v1/events:publish",
     {"events": [{"id": "ext-1", "type": "drift.detected", "payload": {"function_name": "halve"}}]}),
    ("ListDomains", "GET", "/v1/domains", None),
    ("ListDeadLetters", "GET", "/api/v1/dead-letters", {"page_size": 5}),
    # No sinks are configured: the service itself answers SINK_NOT_FOUND.
    ("ReplayDeadLetters", "POST", "/api/v1/dead-letters:replay", {"sink": "slack", "all": True}),
    ("GetLiveness", "GET", "/health/live", None),
    ("GetReadiness", "GET", "/health/ready", None),
]
STREAMS = {"StreamEvents", "StreamFunctionEvents"}  # tested below
REFUSED = {"ReplayDeadLetters": (404, "SINK_NOT_FOUND")}
"""Calls the service answers with an error of its own (so: the RPC was reached)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_the_table_covers_every_documented_operation() -> None:
    documented = {op["operationId"] for methods in DOCUMENT["paths"].values() for op in methods.values()}
    assert documented == {call[0] for call in CALLS} | STREAMS


async def test_every_rpc_answers_at_its_documented_path(client: httpx.AsyncClient) -> None:
    answers = {}
    for operation_id, method, path, data in CALLS:
        if method == "GET":
            response = await client.get(path, params=data)
        else:
            response = await client.post(path, json=data)
        assert response.headers["content-type"] == "application/json"
        if operation_id in REFUSED:
            status, reason = REFUSED[operation_id]
            assert response.status_code == status, response.text
            assert _details(response.json())["ErrorInfo"]["reason"] == reason
            continue
        assert response.status_code == 200, f"{operation_id}: {response.status_code} {response.text}"
        answers[operation_id] = response.json()
    # The seed's JSON: snake_case names, lowercase enum values, int64 as strings.
    assert answers["Enhance"]["version"] == "v1"
    assert answers["EnhanceTranspiled"]["success"] is True
    assert answers["EnhanceTranspiled"]["version"] == "v2"  # other content: the next version
    assert answers["EnhanceExternal"]["version"] == "v3"
    assert answers["SubmitFunctionFeedback"]["status"] == "accepted"
    assert [v["status"] for v in answers["ListFunctionVersions"]["versions"]] == ["active"] * 3
    assert answers["GetFunctionVersion"]["version"]["version"] == "v3"
    assert answers["DeprecateFunctionVersion"]["version"]["status"] == "deprecated"
    assert answers["ActivateFunctionVersion"]["previous_version"] == "v3"
    assert len(answers["ListFunctionEvents"]["events"]) == 2
    assert answers["ListFunctionEvents"]["next_page_token"] != ""
    assert [e["type"] for e in answers["ListEvents"]["events"]] == ["version.activated"]
    (result,) = answers["PublishEvents"]["results"]
    assert result["id"] == "ext-1" and result["position"].isdigit() and result["duplicate"] is False
    assert "computation" in {d["name"] for d in answers["ListDomains"]["domains"]}
    assert answers["ListDeadLetters"] == {"dead_letters": [], "next_page_token": ""}
    assert answers["GetLiveness"] == {"status": "alive"}
    assert answers["GetReadiness"] == {
        "status": "ready", "checks": {"llm_client": True, "storage": True, "memory": True, "sandbox": True},
        "isolation": "namespaces", "authentication": "off",
    }


async def test_openapi_document_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == openapi_path().read_bytes()
    assert response.json()["openapi"].startswith("3.0")


# -- the error contract -------------------------------------------------------

async def test_invalid_argument_is_400_with_bad_request_and_error_info(client: httpx.AsyncClient) -> None:
    body = _error(await client.post("/api/v1/functions/enhance", json={"function_name": "1x", "original_code": ""}),
                  400, 3)
    details = _details(body)
    assert details["ErrorInfo"]["domain"] == "poet.v1"
    assert {v["field"] for v in details["BadRequest"]["field_violations"]} == {"function_name", "original_code"}


async def test_not_found_is_404_with_resource_info(client: httpx.AsyncClient) -> None:
    body = _error(await client.get("/api/v1/functions/nobody/versions/v7"), 404, 5)
    details = _details(body)
    assert details["ErrorInfo"]["reason"].endswith("NOT_FOUND")
    assert "ResourceInfo" in details


async def test_reused_request_id_is_409_with_error_info(client: httpx.AsyncClient) -> None:
    first = {"function_name": "third", "original_code": "def third(x: float) -> float:\n    return x / 3\n",
             "request_id": "req-409"}
    assert (await client.post("/api/v1/functions/enhance", json=first)).status_code == 200
    other = dict(first, original_code="def third(x: float) -> float:\n    return x / 3.0\n")
    body = _error(await client.post("/api/v1/functions/enhance", json=other), 409, 6)
    assert _details(body)["ErrorInfo"]["domain"] == "poet.v1"


@pytest.mark.parametrize(
    ("request_args", "status", "code", "reason"),
    [
        (("GET", "/api/v1/nothing/here"), 404, 5, "UNKNOWN_PATH"),
        (("DELETE", "/v1/domains"), 404, 5, "UNKNOWN_PATH"),
        (("GET", "/v1/domains?bogus=1"), 400, 3, "MALFORMED_REQUEST"),
        (("GET", "/api/v1/events?limit=ten"), 400, 3, "MALFORMED_REQUEST"),
    ],
)
async def test_gateway_refusals_are_json_status_too(client, request_args, status, code, reason) -> None:
    body = _error(await client.request(*request_args), status, code)
    assert _details(body)["ErrorInfo"] == {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                           "reason": reason, "domain": "poet.v1"}


@pytest.mark.parametrize("payload", [b"{not json", b'{"function_name": 5}', b"[]"])
async def test_malformed_json_is_400(client: httpx.AsyncClient, payload: bytes) -> None:
    response = await client.post("/api/v1/functions/enhance", content=payload,
                                 headers={"content-type": "application/json"})
    body = _error(response, 400, 3)
    assert _details(body)["ErrorInfo"]["reason"] == "MALFORMED_REQUEST"


async def test_rate_limit_is_429_with_retry_info_per_client(database) -> None:
    service = await start_real_service(database, rate_limit_per_second=0.5, rate_limit_burst=2)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            alice = {"x-client-id": "alice"}
            assert [(await http.get("/v1/domains", headers=alice)).status_code for _ in range(2)] == [200, 200]
            limited = await http.get("/v1/domains", headers=alice)
            body = _error(limited, 429, 8)
            details = _details(body)
            assert details["ErrorInfo"]["reason"] == "RATE_LIMITED"
            assert details["RetryInfo"]["retry_delay"].endswith("s")
            assert 1 <= int(limited.headers["retry-after"]) <= 2
            # Another client has its own bucket; probes are never limited.
            assert (await http.get("/v1/domains", headers={"x-client-id": "bob"})).status_code == 200
            assert {(await http.get("/health/ready", headers=alice)).status_code for _ in range(5)} == {200}
            # Without x-client-id, REST clients are told apart by their address.
            assert [(await http.get("/v1/domains")).status_code for _ in range(3)] == [200, 200, 429]
        async with grpc.aio.insecure_channel(service.grpc_address) as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            metadata = (("x-client-id", "alice"),)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListDomains(pb.ListDomainsRequest(), metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await stop_real_service(service)


async def test_unreachable_server_is_503_with_retry_info_and_readiness_keeps_its_shape(database) -> None:
    service = await start_real_service(database)
    try:
        await service.server.stop(grace=0)  # the gRPC server is gone, Envoy still runs
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            unavailable = await http.get("/v1/domains")
            body = _error(unavailable, 503, 14)
            details = _details(body)
            assert details["ErrorInfo"]["reason"] == "UPSTREAM_UNAVAILABLE"
            assert details["RetryInfo"]["retry_delay"] == "1s"
            assert unavailable.headers["retry-after"] == "1"
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not_ready",
                                    "checks": {"llm_client": False, "storage": False, "memory": False,
                                               "sandbox": False}}
    finally:
        await stop_real_service(service)


# -- probes --------------------------------------------------------------------

async def test_readiness_is_503_with_the_failed_check(database) -> None:
    service = await start_real_service(database, readiness_max_rss_bytes=1)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == "application/json"
            assert "x-poet-http-status" not in ready.headers
            assert ready.json() == {"status": "not_ready",
                                    "checks": {"llm_client": True, "storage": True, "memory": False,
                                               "sandbox": True},
                                    "isolation": "namespaces", "authentication": "off"}
            assert (await http.get("/health/live")).json() == {"status": "alive"}
        async with grpc.aio.insecure_channel(service.grpc_address) as channel:
            answer = await probes_pb2_grpc.ProbeServiceStub(channel).GetReadiness(probes_pb2.GetReadinessRequest())
        assert answer.status == probes_pb2.not_ready and not answer.checks.memory
    finally:
        await stop_real_service(service)


async def test_readiness_turns_503_when_shutdown_begins(database) -> None:
    service = await start_real_service(database)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            assert (await http.get("/health/ready")).status_code == 200
            await service.server.begin_shutdown()
            ready = await http.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not_ready",
                                    "checks": {"llm_client": True, "storage": True, "memory": True,
                                               "sandbox": True},
                                    "isolation": "namespaces", "authentication": "off"}
            # Still serving while load balancers take the instance out.
            assert (await http.get("/v1/domains")).status_code == 200
            assert (await http.get("/health/live")).status_code == 200
    finally:
        await stop_real_service(service)


async def test_storage_check_fails_when_the_store_does_not_answer(database) -> None:
    service = await start_real_service(database)
    blocker = asyncio.Event()
    try:
        loop = asyncio.get_running_loop()
        # Hold the store thread: the cheap query cannot run within the probe's limit.
        busy = asyncio.ensure_future(service.server.core.db.call(
            lambda store: asyncio.run_coroutine_threadsafe(blocker.wait(), loop).result()))
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            ready = await http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["storage"] is False
        blocker.set()
        await busy
    finally:
        blocker.set()
        await stop_real_service(service)


# -- Server-Sent Events ----------------------------------------------------------

async def _frames(client: httpx.AsyncClient, path: str, params=None, *, until, timeout: float = 10) -> list[dict]:
    """SSE frames of path until until(frames) holds; then the client hangs up."""
    frames: list[dict] = []

    async def read() -> None:
        async with client.stream("GET", path, params=params) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[len("data: "):]))
                    if until(frames):
                        return

    await asyncio.wait_for(read(), timeout)
    return frames


def _caught_up(frames: list[dict]) -> bool:
    return bool(frames) and frames[-1].get("checkpoint", {}).get("caught_up", False)


async def _publish(client: httpx.AsyncClient, *events: dict) -> list[int]:
    response = await client.post("/api/v1/events:publish", json={"events": list(events)})
    assert response.status_code == 200, response.text
    return [int(r["position"]) for r in response.json()["results"]]


async def test_sse_filters_by_function_type_and_correlation(client: httpx.AsyncClient) -> None:
    await _publish(
        client,
        {"type": "sse.seen", "function_name": "sse_a", "correlation_id": "c-1"},
        {"type": "sse.seen", "function_name": "sse_b", "correlation_id": "c-1"},
        {"type": "sse.note", "function_name": "sse_a", "correlation_id": "c-2"},
    )
    by_function = await _frames(client, "/api/v1/functions/sse_a/events:stream", until=_caught_up)
    assert [(f["event"]["type"], f["event"]["function_name"]) for f in by_function if "event" in f] == [
        ("sse.seen", "sse_a"), ("sse.note", "sse_a")]
    by_type = await _frames(client, "/api/v1/functions/sse_a/events:stream", {"event_type": "sse.note"},
                            until=_caught_up)
    assert [f["event"]["type"] for f in by_type if "event" in f] == ["sse.note"]
    by_correlation = await _frames(client, "/api/v1/events:stream", {"correlation_id": "c-1"}, until=_caught_up)
    assert [f["event"]["function_name"] for f in by_correlation if "event" in f] == ["sse_a", "sse_b"]


async def test_sse_resumes_after_a_position_and_delivers_live_events(client: httpx.AsyncClient) -> None:
    first, second = await _publish(client, {"type": "resume.one", "function_name": "sse_r"},
                                   {"type": "resume.two", "function_name": "sse_r"})
    resumed = await _frames(client, "/api/v1/functions/sse_r/events:stream", {"after_position": first},
                            until=_caught_up)
    assert [int(f["event"]["position"]) for f in resumed if "event" in f] == [second]
    assert int(resumed[-1]["checkpoint"]["position"]) >= second

    async def publish_later() -> None:
        await asyncio.sleep(0.5)
        await _publish(client, {"type": "resume.three", "function_name": "sse_r"})

    later = asyncio.ensure_future(publish_later())
    live = await _frames(client, "/api/v1/functions/sse_r/events:stream", {"live_only": "true"},
                         until=lambda frames: any("event" in f for f in frames))
    await later
    assert [f["event"]["type"] for f in live if "event" in f] == ["resume.three"]


async def test_sse_sends_batches_when_asked(client: httpx.AsyncClient) -> None:
    positions = await _publish(client, *({"type": "sse.batch", "function_name": "sse_batch", "payload": {"n": n}}
                                         for n in range(5)))
    frames = await _frames(client, "/api/v1/functions/sse_batch/events:stream", {"max_batch_size": 2},
                           until=_caught_up)
    batches = [f["batch"]["events"] for f in frames if "batch" in f]
    assert all(1 <= len(b) <= 2 for b in batches) and not any("event" in f for f in frames)
    assert [int(e["position"]) for b in batches for e in b] == positions
    assert [e["payload"]["n"] for b in batches for e in b] == [0, 1, 2, 3, 4]
    body = _error(await client.get("/api/v1/events:stream", params={"max_batch_size": 5000}), 400, 3)
    assert _details(body)["BadRequest"]["field_violations"][0]["field"] == "max_batch_size"


async def test_sse_rejects_bad_filters_with_json_errors(client: httpx.AsyncClient) -> None:
    body = _error(await client.get("/api/v1/events:stream", params={"live_only": "true", "after_position": 3}),
                  400, 3)
    assert _details(body)["BadRequest"]["field_violations"][0]["field"] == "live_only"
    _error(await client.get("/api/v1/events:stream", params={"bogus": "1"}), 400, 3)
    _error(await client.get("/api/v1/functions/not-an-identifier/events:stream"), 400, 3)


async def test_idle_streams_outlive_the_request_timeout(real_service) -> None:
    # A gateway whose unary calls time out after 1 s: streams must not.
    async with EnvoyGateway(real_service.grpc_address, "127.0.0.1:0", request_timeout=1) as gateway:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10) as http:
            started = asyncio.get_running_loop().time()
            frames = await _frames(http, "/api/v1/functions/sse_idle/events:stream",
                                   until=lambda f: asyncio.get_running_loop().time() - started > 2.5)
            # Nothing happened to sse_idle: only checkpoints, every 0.3 s, for 2.5 s.
            assert all("checkpoint" in f for f in frames) and len(frames) >= 5

            # Native gRPC streams through the same port are not cut either.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.http_port}") as channel:
                stream = poet_service_pb2_grpc.PoetServiceStub(channel).StreamEvents(
                    pb.StreamEventsRequest(function_name="sse_idle"))
                count = 0
                async for _ in stream:
                    count += 1
                    if asyncio.get_running_loop().time() - started > 4:
                        break
                stream.cancel()
            assert count >= 5
