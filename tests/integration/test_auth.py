"""Authentication and roles over gRPC, against a real server with a real auth file."""

from __future__ import annotations

import json

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc._gen.poet.v1 import probes_pb2, probes_pb2_grpc
from poet_grpc.config import Settings

from auth_support import API_KEYS, bad_tokens, bearer, write_auth_file
from support import details

CODE = "def ratio(a: float, b: float) -> float:\n    return a / b\n"


@pytest.fixture
def credentials(tmp_path):
    return write_auth_file(tmp_path / "auth")


@pytest_asyncio.fixture
async def auth_server(tmp_path, credentials):
    from poet_grpc.api.server import create_server

    settings = Settings(grpc_listen="127.0.0.1:0", gateway=False, db=tmp_path / "poet.db", checkpoint_seconds=30.0,
                        auth_file=str(credentials.auth_file), audit_log=str(tmp_path / "audit.log"))
    server, port = await create_server(settings)
    server.address = f"127.0.0.1:{port}"
    server.audit_path = tmp_path / "audit.log"
    yield server
    await server.stop(grace=1)


@pytest_asyncio.fixture
async def stub(auth_server):
    async with grpc.aio.insecure_channel(auth_server.address) as channel:
        yield poet_service_pb2_grpc.PoetServiceStub(channel)


async def _refusal(call) -> tuple[grpc.StatusCode, str, grpc.aio.AioRpcError]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), details(caught.value)["ErrorInfo"].reason, caught.value


async def test_no_credential_is_unauthenticated_with_www_authenticate(stub) -> None:
    code, reason, error = await _refusal(stub.ListDomains(pb.ListDomainsRequest()))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_MISSING")
    assert ("www-authenticate", "Bearer") in tuple(error.trailing_metadata())


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "pk_admin_" + "x" * 24, "Bearer " + "k" * 20_000])
async def test_a_malformed_authorization_header_is_refused(stub, header) -> None:
    code, reason, _ = await _refusal(stub.ListDomains(pb.ListDomainsRequest(), metadata=(("authorization", header),)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_MALFORMED")


async def test_an_unknown_api_key_is_refused_without_saying_which_keys_exist(stub) -> None:
    code, reason, error = await _refusal(stub.ListDomains(pb.ListDomainsRequest(),
                                                          metadata=bearer(API_KEYS["admin"] + "x")))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    assert "admin" not in error.details() and not details(error)["ErrorInfo"].metadata


async def test_every_bad_jwt_is_refused_with_its_reason(stub, credentials) -> None:
    for name, (token, expected) in bad_tokens(credentials).items():
        code, reason, _ = await _refusal(stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(token)))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, expected), name


async def test_a_token_signed_by_either_listed_key_verifies(stub, credentials) -> None:
    """Rotation: the new key is listed before the old one is removed."""
    for key in (credentials.signing_key, credentials.second_key):
        token = credentials.token(roles=["viewer"], key=key)
        assert (await stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(token))).domains


ROLE_CALLS = {
    "viewer": lambda s, m: s.ListDomains(pb.ListDomainsRequest(), metadata=m),
    "agent": lambda s, m: s.PublishEvents(pb.PublishEventsRequest(events=[events_pb2.Event(type="drift.detected")]),
                                          metadata=m),
    "operator": lambda s, m: s.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=m),
}


async def test_each_role_may_call_its_methods_and_those_below_only(stub) -> None:
    ranks = ["viewer", "agent", "operator", "admin"]
    for role, key in API_KEYS.items():
        for needed, call in ROLE_CALLS.items():
            if ranks.index(role) >= ranks.index(needed):
                await call(stub, bearer(key))
            else:
                code, reason, error = await _refusal(call(stub, bearer(key)))
                assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED"), (role, needed)
                assert details(error)["ErrorInfo"].metadata["required_role"] == needed


async def test_a_jwt_carries_its_roles(stub, credentials) -> None:
    viewer = credentials.token(roles=["viewer"])
    await stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(viewer))
    code, reason, _ = await _refusal(stub.Enhance(pb.EnhanceRequest(function_name="ratio", original_code=CODE),
                                                  metadata=bearer(viewer)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
    no_roles = credentials.token(roles=[])
    code, reason, _ = await _refusal(stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(no_roles)))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")


async def test_enhance_transpiled_needs_the_service_claim_even_for_admin(stub, credentials) -> None:
    request = pb.EnhanceTranspiledRequest(function_name="ratio", python_code=CODE, transpilation_id="t-1")
    for metadata in (bearer(API_KEYS["admin"]), bearer(credentials.token(roles=["admin"])),
                     bearer(credentials.token(roles=["agent"], service="other"))):
        code, reason, _ = await _refusal(stub.EnhanceTranspiled(request, metadata=metadata))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CLAIM_REQUIRED")
    response = await stub.EnhanceTranspiled(request, metadata=bearer(credentials.transpiler_token()))
    assert response.success and response.version == "v1"
    # The role is still needed beside the claim.
    code, reason, _ = await _refusal(stub.EnhanceTranspiled(
        request, metadata=bearer(credentials.transpiler_token(roles=["viewer"]))))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")


async def test_refused_calls_change_nothing(stub) -> None:
    admin = bearer(API_KEYS["admin"])
    await stub.Enhance(pb.EnhanceRequest(function_name="ratio", original_code=CODE), metadata=admin)
    before = (await stub.ListEvents(pb.ListEventsRequest(page_size=1000), metadata=admin)).events
    attacks = [
        stub.ActivateVersion(pb.ActivateVersionRequest(function_name="ratio", version="v1"),
                             metadata=bearer(API_KEYS["agent"])),
        stub.DeprecateVersion(pb.DeprecateVersionRequest(function_name="ratio", version="v1")),
        stub.Enhance(pb.EnhanceRequest(function_name="ratio", original_code=CODE.replace("a / b", "b")),
                     metadata=bearer(API_KEYS["viewer"])),
        stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name="ratio", version="v1", feedback_type=pb.user,
                                                     rating=1)),
        stub.PublishEvents(pb.PublishEventsRequest(events=[events_pb2.Event(type="function.execution")]),
                           metadata=bearer(API_KEYS["viewer"])),
        stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="x", all=True), metadata=bearer(API_KEYS["agent"])),
    ]
    for attack in attacks:
        code, _, _ = await _refusal(attack)
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    after = (await stub.ListEvents(pb.ListEventsRequest(page_size=1000), metadata=admin)).events
    assert [e.id for e in after] == [e.id for e in before]


async def test_health_probes_and_reflection_need_no_credential(auth_server) -> None:
    async with grpc.aio.insecure_channel(auth_server.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        ready = await probes_pb2_grpc.ProbeServiceStub(channel).GetReadiness(probes_pb2.GetReadinessRequest())
        assert ready.authentication == "api_keys+jwt"
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for response in responses:
            assert "poet.v1.PoetService" in {s.name for s in response.list_services_response.service}
            break


async def test_events_record_the_principal_and_a_published_one_is_ignored(stub, credentials) -> None:
    token = credentials.token("agent-jwt", roles=["agent"])
    await stub.Enhance(pb.EnhanceRequest(function_name="ratio", original_code=CODE), metadata=bearer(token))
    forged = events_pb2.Event(type="agent.note", metadata=events_pb2.EventMetadata(principal="admin-key"))
    await stub.PublishEvents(pb.PublishEventsRequest(events=[forged]), metadata=bearer(API_KEYS["agent"]))
    await stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name="ratio", version="v1", feedback_type=pb.user,
                                                       rating=5), metadata=bearer(API_KEYS["operator"]))
    events = (await stub.ListEvents(pb.ListEventsRequest(page_size=100), metadata=bearer(API_KEYS["viewer"]))).events
    by_type = {e.type: e.metadata.principal for e in events}
    assert by_type == {"enhancement.completed": "agent-jwt", "agent.note": "agent-key",
                       "function.feedback": "operator-key"}


async def test_the_rate_limit_keys_on_the_principal_not_on_x_client_id(tmp_path, credentials) -> None:
    from poet_grpc.api.server import create_server

    settings = Settings(grpc_listen="127.0.0.1:0", gateway=False, db=tmp_path / "rl.db",
                        auth_file=str(credentials.auth_file), rate_limit_per_second=0.001, rate_limit_burst=2)
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            for i in range(2):  # a fresh x-client-id on each call does not buy a fresh bucket
                await stub.ListDomains(pb.ListDomainsRequest(),
                                       metadata=bearer(API_KEYS["viewer"]) + (("x-client-id", f"c{i}"),))
            code, reason, _ = await _refusal(stub.ListDomains(
                pb.ListDomainsRequest(), metadata=bearer(API_KEYS["viewer"]) + (("x-client-id", "c9"),)))
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
            # Another principal sharing the x-client-id has its own bucket.
            await stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(API_KEYS["agent"]) + (("x-client-id", "c0"),))
    finally:
        await server.stop(grace=None)


async def test_the_audit_log_has_one_line_per_call_and_no_secret(stub, auth_server, credentials) -> None:
    token = credentials.token("agent-jwt", roles=["agent"])
    marker = "secret_body_marker_7731"
    code = CODE.replace("return a / b", f"return a / b  # {marker}")
    await stub.Enhance(pb.EnhanceRequest(function_name="ratio", original_code=code, request_id="req-1"),
                       metadata=bearer(token) + (("x-correlation-id", "corr-9"),))
    await _refusal(stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(API_KEYS["viewer"] + "nope")))
    await _refusal(stub.ActivateVersion(pb.ActivateVersionRequest(function_name="ratio", version="v1"),
                                        metadata=bearer(API_KEYS["agent"])))
    async with grpc.aio.insecure_channel(auth_server.address) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    text = auth_server.audit_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(r["rpc"].rsplit("/", 1)[1], r["code"], r["principal"], r["auth"]) for r in lines] == [
        ("Enhance", "OK", "agent-jwt", "jwt"),
        ("ListDomains", "UNAUTHENTICATED", None, "refused"),
        ("ActivateVersion", "PERMISSION_DENIED", "agent-key", "api_key"),
    ]
    first = lines[0]
    assert first["request_id"] == "req-1" and first["correlation_id"] == "corr-9"
    assert first["latency_ms"] > 0 and first["peer"].startswith("ipv4:127.0.0.1")
    assert first["time"].endswith("Z")
    for secret in [token, *API_KEYS.values(), API_KEYS["viewer"] + "nope", marker, "Bearer"]:
        assert secret not in text


async def test_a_token_in_config_is_refused_so_no_viewer_can_read_it(stub, credentials) -> None:
    request = pb.EnhanceTranspiledRequest(function_name="ratio", python_code=CODE, transpilation_id="t-9")
    request.config.update({"events_token": API_KEYS["agent"]})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EnhanceTranspiled(request, metadata=bearer(credentials.transpiler_token()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in details(caught.value)["BadRequest"].field_violations} == {"config"}
    assert API_KEYS["agent"] not in caught.value.details()
    events = (await stub.ListEvents(pb.ListEventsRequest(page_size=100), metadata=bearer(API_KEYS["viewer"]))).events
    assert not events
