"""Authentication through the REST gateway: the same credential gets the same
answer as over gRPC; 401 names the scheme; what needs no credential stays open;
the audit line says which REST call it was; oversized headers get a clear 431."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
import pytest_asyncio

from gateway_support import start_real_service, stop_real_service
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc

from auth_support import API_KEYS, bad_tokens, bearer, write_auth_file

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def halve(x: float) -> float:\n    return x / 2\n"
HTTP_STATUS = {grpc.StatusCode.OK: 200, grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403}


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return write_auth_file(tmp_path_factory.mktemp("auth"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(tmp_path_factory, new_database, credentials):
    folder = tmp_path_factory.mktemp("rest-auth")
    service = await start_real_service(new_database(), auth_file=str(credentials.auth_file),
                                       audit_log=str(folder / "audit.log"))
    service.audit_path = folder / "audit.log"
    yield service
    await stop_real_service(service)


def _credentials_table(credentials) -> dict[str, str | None]:
    return {
        "none": None,
        "bad key": API_KEYS["agent"] + "0",
        "viewer key": API_KEYS["viewer"],
        "agent key": API_KEYS["agent"],
        "operator key": API_KEYS["operator"],
        "agent jwt": credentials.token(roles=["agent"]),
        "transpiler jwt": credentials.transpiler_token(),
        **{f"{name} jwt": token for name, (token, _) in bad_tokens(credentials).items()},
    }


# (gRPC method, request, REST method, path, body)
CALLS = [
    ("ListDomains", pb.ListDomainsRequest(), "GET", "/v1/domains", None),
    ("Enhance", pb.EnhanceRequest(function_name="halve", original_code=CODE), "POST", "/api/v1/functions/enhance",
     {"function_name": "halve", "original_code": CODE}),
    ("EnhanceTranspiled", pb.EnhanceTranspiledRequest(function_name="halve", python_code=CODE, transpilation_id="t"),
     "POST", "/v1/aitomatic/enhance", {"function_name": "halve", "python_code": CODE, "transpilation_id": "t"}),
    ("ListDeadLetters", pb.ListDeadLettersRequest(), "GET", "/api/v1/dead-letters", None),
]


async def test_the_same_credential_gets_the_same_answer_on_both_surfaces(service, credentials) -> None:
    table = _credentials_table(credentials)
    seen = set()
    async with grpc.aio.insecure_channel(service.grpc_address) as channel, \
            httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        for method, request, http_method, path, body in CALLS:
            for name, credential in table.items():
                metadata = bearer(credential) if credential else ()
                try:
                    await getattr(stub, method)(request, metadata=metadata)
                    code, reason = grpc.StatusCode.OK, ""
                except grpc.aio.AioRpcError as error:
                    code, reason = error.code(), _reason_of(error)
                headers = {"authorization": f"Bearer {credential}"} if credential else {}
                response = await client.request(http_method, path, json=body, headers=headers)
                assert response.status_code == HTTP_STATUS[code], (method, name, response.text)
                if code != grpc.StatusCode.OK:
                    rest_reason = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")][0]["reason"]
                    assert rest_reason == reason, (method, name)
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    assert response.headers["www-authenticate"] == "Bearer"
                seen.add(code)
    assert seen == set(HTTP_STATUS)


def _reason_of(error) -> str:
    from support import details

    return details(error)["ErrorInfo"].reason


async def test_probes_and_the_openapi_document_need_no_credential(service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        assert (await client.get("/health/live")).json() == {"status": "alive"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["authentication"] == "api_keys+jwt"
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")
        assert (await client.get("/v1/domains")).status_code == 401


async def test_the_audit_line_names_the_rest_call(service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        response = await client.get("/api/v1/functions/halve/versions?page_size=3",
                                    headers={"authorization": f"Bearer {API_KEYS['viewer']}",
                                             "x-forwarded-for": "203.0.113.9"})
    assert response.status_code in (200, 404)
    lines = [json.loads(line) for line in service.audit_path.read_text().splitlines()]
    line = [r for r in lines if r["rpc"].endswith("/ListVersions")][-1]
    assert (line["http_method"], line["http_path"], line["principal"]) == (
        "GET", "/api/v1/functions/halve/versions", "viewer-key")
    # The gateway appends the address it saw to what the client claimed.
    claimed, seen_by_gateway = line["forwarded_for"].split(",")
    assert claimed == "203.0.113.9" and seen_by_gateway
    text = service.audit_path.read_text()
    assert all(key not in text for key in API_KEYS.values())


async def test_oversized_headers_get_a_clear_431_and_a_long_client_id_is_no_rate_limit(service) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        huge = await client.get("/v1/domains", headers={"authorization": f"Bearer {API_KEYS['viewer']}",
                                                         "x-padding": "p" * 60_000})
        assert huge.status_code == 431
        body = huge.json()
        assert body["code"] == 3 and body["details"][0]["reason"] == "HEADERS_TOO_LARGE"
        assert "ppppp" not in huge.text
        long_id = await client.get("/v1/domains", headers={"authorization": f"Bearer {API_KEYS['viewer']}",
                                                            "x-client-id": "c" * 10_000})
        assert long_id.status_code == 200, long_id.text


async def test_a_token_in_config_is_refused_over_rest_too(service, credentials) -> None:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        response = await client.post("/v1/aitomatic/enhance", json={
            "function_name": "halve", "python_code": CODE, "transpilation_id": "t-9",
            "config": {"events_token": API_KEYS["agent"]}},
            headers={"authorization": f"Bearer {credentials.transpiler_token()}"})
    assert response.status_code == 400, response.text
    body = response.json()
    violations = [d for d in body["details"] if d["@type"].endswith("BadRequest")][0]["field_violations"]
    assert [v["field"] for v in violations] == ["config"]
    assert API_KEYS["agent"] not in response.text
