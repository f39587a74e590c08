"""Traces exported to a local OTLP receiver: the caller's trace id, over gRPC
metadata and through the real Envoy gateway, is the one exported, with the
generator's, the gate's, the LLM's and the store's spans as children; events
carry the trace; a regeneration by the learning loop links to the request that
caused it. And without OTEL_TRACES_EXPORTER, nothing is traced."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from fakes.gemini_server import GeminiFake, text_reply
from fakes.otlp_receiver import OtlpReceiver
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.api.gateway import EnvoyGateway
from poet_grpc.api.server import create_server

CODE = '''
def area(width: float, height: float) -> float:
    """Area of a rectangle."""
    return width * height
'''
FETCH = '''
def fetch_rate(currency: str) -> float:
    """Exchange rate of a currency (from a flaky upstream)."""
    return {"EUR": 1.08, "GBP": 1.27}[currency]
'''
OTEL_VARIABLES = [name for name in os.environ if name.startswith("OTEL_")]


@pytest.fixture
def receiver():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def otel_env(monkeypatch, receiver):
    """The environment an operator sets: OTLP over gRPC to the receiver."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")


@pytest.fixture
def gemini():
    with GeminiFake() as fake:
        yield fake


@pytest.fixture
async def traced(settings, otel_env, gemini):
    """A POET server started with OTEL_* pointing at the receiver, and Gemini at its fake."""
    configured = dataclasses.replace(settings, gemini_api_key="test-key", gemini_base_url=gemini.base_url,
                                     gemini_timeout_seconds=5)
    server, port = await create_server(configured)
    server.address = f"127.0.0.1:{port}"
    yield server
    await server.stop(grace=1)


def traceparent() -> tuple[str, str, str]:
    """(header, trace id, parent span id) of a new sampled W3C trace context."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def only(spans: dict[str, list], name: str):
    assert len(spans.get(name, [])) == 1, f"{name}: {sorted(spans)}"
    return spans[name][0]


def assert_enhance_trace(spans: dict[str, list], rpc_name: str, client_span: str) -> None:
    """The RPC's span continues the client's; the work is in its children."""
    rpc = only(spans, rpc_name)
    assert rpc.parent_span_id.hex() == client_span
    assert rpc.kind == rpc.SPAN_KIND_SERVER
    generate = only(spans, "poet.generate")
    assert generate.parent_span_id == rpc.span_id
    for name in ("poet.prepare", "poet.llm"):
        assert only(spans, name).parent_span_id == generate.span_id, name
    llm = only(spans, "poet.llm")
    assert only(spans, "poet.llm.call").parent_span_id == llm.span_id
    # The gate checked the template's version, then the LLM's answer (and refused it).
    gates = {gate.parent_span_id: gate for gate in spans["poet.gate"]}
    assert gates.keys() == {generate.span_id, llm.span_id}
    assert gates[llm.span_id].status.code == gates[llm.span_id].status.STATUS_CODE_ERROR
    commits = spans["poet.store.commit"]
    assert commits and all(commit.parent_span_id == rpc.span_id for commit in commits)


async def events_of(stub, function_name: str, event_type: str) -> list[events_pb2.Event]:
    response = await stub.ListEvents(pb.ListEventsRequest(function_name=function_name, event_type=event_type))
    return list(response.events)


async def test_the_trace_a_grpc_caller_sent_is_exported_with_the_work_as_child_spans(traced, receiver, gemini):
    gemini.push(text_reply("No code today."))  # one LLM call, whose answer the gate refuses
    header, trace_id, client_span = traceparent()
    async with grpc.aio.insecure_channel(traced.address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE),
                           metadata=[("traceparent", header)])
        [completed] = await events_of(stub, "area", "enhancement.completed")
    await traced.stop(grace=1)  # flushes the batch processor

    spans = receiver.in_trace(trace_id)
    assert_enhance_trace(spans, "/poet.v1.PoetService/Enhance", client_span)
    assert only(spans, "poet.llm").attributes  # gen_ai.system, the model, the outcome
    # The event appended by the call carries its trace, and the span that stored it.
    assert completed.metadata.trace_id == trace_id
    assert completed.metadata.span_id in {commit.span_id.hex() for commit in spans["poet.store.commit"]}
    assert {"service.name": "poet-grpc"}.items() <= receiver.resources[0].items()


async def test_a_rest_caller_s_traceparent_is_carried_through_envoy(traced, receiver, gemini):
    gemini.push(text_reply("No code today."))
    header, trace_id, client_span = traceparent()
    async with EnvoyGateway(traced.address, "127.0.0.1:0") as gateway:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=60) as client:
            answer = await client.post("/api/v1/functions/enhance", headers={"traceparent": header},
                                       json={"function_name": "area", "original_code": CODE})
            assert answer.status_code == 200, answer.text
            listed = (await client.get("/api/v1/functions/area/events",
                                       params={"event_type": "enhancement.completed"})).json()
    await traced.stop(grace=1)

    assert_enhance_trace(receiver.in_trace(trace_id), "/poet.v1.PoetService/Enhance", client_span)
    assert listed["events"][0]["metadata"]["trace_id"] == trace_id


async def test_a_regeneration_by_the_learning_loop_links_to_the_request_that_caused_it(traced, receiver):
    header, trace_id, _ = traceparent()
    async with grpc.aio.insecure_channel(traced.address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        await stub.Enhance(pb.EnhanceRequest(function_name="fetch_rate", original_code=FETCH))
        runs = []
        for i in range(25):  # 9 of 25 fail: the error rate fires the policy
            payload = struct_pb2.Struct()
            payload.update({"function_name": "fetch_rate", "version": "v1", "execution_id": str(uuid.uuid4()),
                            "status": "failure" if i % 3 == 0 else "success", "metrics": {"duration_ms": 4.0}})
            runs.append(events_pb2.Event(type="function.execution", source="tests", payload=payload))
        await stub.PublishEvents(pb.PublishEventsRequest(events=runs), metadata=[("traceparent", header)])
        executions = await events_of(stub, "fetch_rate", "function.execution")
        for _ in range(300):  # the background consumer regenerates
            updates = await events_of(stub, "fetch_rate", "function.update")
            if updates:
                break
            await asyncio.sleep(0.05)
    await traced.stop(grace=1)

    assert updates, "the learning loop made no new version"
    assert {event.metadata.trace_id for event in executions} == {trace_id}
    publish = only(receiver.in_trace(trace_id), "/poet.v1.PoetService/PublishEvents")
    [regenerate] = [span for span in receiver.spans if span.name == "poet.regenerate"]
    # A trace of its own (nobody was waiting for it), linked to the request's span.
    assert regenerate.trace_id.hex() != trace_id
    assert [(link.trace_id.hex(), link.span_id) for link in regenerate.links] == [(trace_id, publish.span_id)]
    attributes = {a.key: a.value.string_value for a in regenerate.attributes}
    assert attributes["poet.trigger.trace_id"] == trace_id
    # What it appended is in its trace, with the generation as its child.
    assert updates[0].metadata.trace_id == regenerate.trace_id.hex()
    generate = only(receiver.in_trace(regenerate.trace_id.hex()), "poet.generate")
    assert generate.parent_span_id == regenerate.span_id


async def test_tracing_is_off_by_default(settings, receiver, monkeypatch):
    """An endpoint alone turns nothing on: no exporter, no spans, no trace ids."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    server, port = await create_server(settings)
    try:
        assert server.tracer_provider is None
        header, _, _ = traceparent()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE),
                               metadata=[("traceparent", header)])
            [completed] = await events_of(stub, "area", "enhancement.completed")
    finally:
        await server.stop(grace=1)
    await asyncio.sleep(0.5)
    assert receiver.spans == []
    assert completed.metadata.trace_id == "" and completed.metadata.span_id == ""
