"""The metrics a real server exposes after real calls, read by parsing its exposition."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from contextlib import asynccontextmanager

import grpc
import pytest
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from auth_support import API_KEYS, write_auth_file
from fakes.gemini_server import GeminiFake, code_reply
from fakes.receivers import Receiver
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.api.server import create_server
from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import generate
from postgres_support import sqlite_only

CODE = "def area(width: float, height: float) -> float:\n    return width * height\n"
SERVICE = "poet.v1.PoetService"
FAST_SINK = {"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.02, "timeout_seconds": 2,
             "breaker_reset_seconds": 600}


class Scrape:
    """One exposition, parsed: sample values by name and labels."""

    def __init__(self, server):
        body, content_type = server.core.metrics.exposition()
        assert content_type.startswith("text/plain")
        self.families = list(text_string_to_metric_families(body.decode()))
        self.samples = {(s.name, frozenset(s.labels.items())): s.value for f in self.families for s in f.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the series does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum over every series of a sample name."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]


def rpc(method: str, grpc_type: str = "unary", service: str = SERVICE) -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}


async def until(condition, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def settled(server) -> Scrape:
    """A scrape once no call is in flight. grpc sends an error status before the
    handler's stack unwinds, so a client may see it before the metrics count it."""
    await until(lambda: Scrape(server).total("grpc_server_in_flight_calls") == 0)
    return Scrape(server)


@asynccontextmanager
async def running(settings, **changes):
    server, port = await create_server(dataclasses.replace(settings, **changes))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, poet_service_pb2_grpc.PoetServiceStub(channel), channel
    finally:
        await server.stop(grace=1)


def event(type_: str, **payload) -> events_pb2.Event:
    body = struct_pb2.Struct()
    body.update(payload)
    return events_pb2.Event(type=type_, source="tests", payload=body)


async def test_enhance_ok_and_refused_move_the_rpc_and_enhancement_counters(server, stub):
    await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE))
    with pytest.raises(grpc.aio.AioRpcError) as refused_early:  # by the validation interceptor
        await stub.Enhance(pb.EnhanceRequest(function_name="area"))
    with pytest.raises(grpc.aio.AioRpcError) as refused_late:  # by the core: it knows the domains
        await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE, domain="astrology"))
    assert refused_early.value.code() == refused_late.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    m = await settled(server)
    enhance = rpc("Enhance")
    assert m.value("grpc_server_started_total", **enhance) == 3
    assert m.value("grpc_server_handled_total", **enhance, grpc_code="OK") == 1
    assert m.value("grpc_server_handled_total", **enhance, grpc_code="INVALID_ARGUMENT") == 2
    assert m.value("grpc_server_handling_seconds_count", **enhance) == 3
    # The seed's metrics count what reached the core: the early refusal did not.
    assert m.value("poet_enhancement_requests_total", domain="base_reliability", status="success") == 1
    assert m.value("poet_enhancement_requests_total", domain="unknown", status="error") == 1
    assert m.total("poet_enhancement_requests_total") == 2
    assert m.value("poet_enhancement_duration_seconds_count", domain="base_reliability") == 1
    assert m.value("poet_active_enhancements") == 0
    assert m.value("poet_gate_duration_seconds_count", generator="template") == 1
    assert m.total("poet_gate_rejections_total") == 0


async def test_refusals_by_auth_and_unknown_methods_are_counted_with_bounded_labels(settings, tmp_path):
    credentials = write_auth_file(tmp_path)
    async with running(settings, auth_file=str(credentials.auth_file)) as (server, stub, channel):
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.ListDomains(pb.ListDomainsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as viewer:
            await stub.PublishEvents(pb.PublishEventsRequest(events=[event("x.y")]),
                                     metadata=(("authorization", f"Bearer {API_KEYS['viewer']}"),))
        for name in ("/poet.v1.PoetService/NoSuchMethod", "/made.up.Service/Anything"):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await channel.unary_unary(name)(b"")
            assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
        m = await settled(server)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert viewer.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert m.value("grpc_server_handled_total", **rpc("ListDomains"), grpc_code="UNAUTHENTICATED") == 1
    assert m.value("grpc_server_handled_total", **rpc("PublishEvents"), grpc_code="PERMISSION_DENIED") == 1
    unknown_labels = rpc("unknown", "unknown", "unknown")
    assert m.value("grpc_server_handled_total", **unknown_labels, grpc_code="UNIMPLEMENTED") == 2
    methods = {labels["grpc_method"] for labels in m.labels("grpc_server_started_total")}
    assert methods == {"ListDomains", "PublishEvents", "unknown"}


async def test_an_open_stream_is_in_flight_until_it_ends(server, stub):
    call = stub.StreamEvents(pb.StreamEventsRequest())
    await call.read()  # the first checkpoint: the stream is open on the server
    stream = rpc("StreamEvents", "server_stream")
    assert Scrape(server).value("grpc_server_in_flight_calls", **stream) == 1
    call.cancel()
    await until(lambda: Scrape(server).value("grpc_server_in_flight_calls", **stream) == 0)
    m = Scrape(server)
    assert m.value("grpc_server_handled_total", **stream, grpc_code="CANCELLED") == 1
    assert m.value("grpc_server_msg_sent_total", **stream) == 1


@sqlite_only
async def test_publish_counts_appends_and_the_log_size_and_positions(server, stub):
    before = Scrape(server)
    response = await stub.PublishEvents(pb.PublishEventsRequest(events=[event("x.tick", n=i) for i in range(5)]))
    positions = [r.position for r in response.results]
    m = Scrape(server)
    assert m.value("poet_event_log_appended_events_total") - before.value("poet_event_log_appended_events_total") == 5
    assert m.value("poet_event_log_append_seconds_count") > before.value("poet_event_log_append_seconds_count")
    assert m.value("poet_event_log_newest_position") == positions[-1]
    assert m.value("poet_event_log_oldest_position") == 1
    assert m.value("poet_event_log_events") == positions[-1]
    assert m.value("poet_store_file_bytes") > 0
    # A republished batch (same ids) appends nothing.
    again = [events_pb2.Event(id=r.id, type="x.tick", source="tests") for r in response.results]
    await stub.PublishEvents(pb.PublishEventsRequest(events=again))
    appended = m.value("poet_event_log_appended_events_total")
    assert Scrape(server).value("poet_event_log_appended_events_total") == appended


def sinks_file(tmp_path, url: str, **extra) -> str:
    path = tmp_path / "sinks.json"
    path.write_text(json.dumps([{"name": "hook", "kind": "webhook", "url": url, "event_types": ["notify.*"],
                                 **FAST_SINK, **extra}]))
    return str(path)


async def test_a_stuck_sink_lags_by_what_it_has_not_delivered(settings, tmp_path):
    with Receiver() as receiver:
        receiver.fail_always(503)
        sinks = sinks_file(tmp_path, receiver.url, max_attempts=1000, breaker_threshold=1000)
        async with running(settings, sinks_file=sinks) as (server, stub, _):
            await stub.PublishEvents(pb.PublishEventsRequest(events=[event("other.thing")]))
            notifications = [event("notify.a", n=i) for i in range(3)]
            published = await stub.PublishEvents(pb.PublishEventsRequest(events=notifications))
            newest = published.results[-1].position
            await until(lambda: len(receiver.requests) >= 2)  # stuck retrying the first notify.a
            durable = await server.core.db.call(lambda store: store.consumer_position("sink:hook"))
            assert durable < published.results[0].position
            m = Scrape(server)
            assert m.value("poet_event_consumer_lag_events", consumer="sink:hook") == newest - durable
            assert {labels["consumer"] for labels in m.labels("poet_event_consumer_lag_events")} == {
                "learning", "inbound", "sink:hook"}
            assert m.value("poet_event_consumer_lag_events", consumer="learning") <= newest

            receiver.recover()
            await until(lambda: len(receiver.delivered()) == 3)
            await until(lambda: Scrape(server).value("poet_event_consumer_lag_events", consumer="sink:hook") == 0)
            m = Scrape(server)
            assert m.value("poet_sink_deliveries_total", sink="hook") == 3
            assert m.value("poet_sink_failures_total", sink="hook", retryable="true") == len(receiver.requests) - 3
            assert m.total("poet_sink_dead_letters_total") == 0


async def test_a_failing_sink_shows_failures_retries_dead_letters_and_an_open_breaker(settings, tmp_path):
    with Receiver() as receiver:
        receiver.fail_always(503)
        sinks = sinks_file(tmp_path, receiver.url, max_attempts=3, breaker_threshold=3)
        async with running(settings, sinks_file=sinks) as (server, stub, _):
            assert Scrape(server).value("poet_sink_breaker_state", sink="hook") == 0
            await stub.PublishEvents(pb.PublishEventsRequest(events=[event("notify.a")]))
            await until(lambda: Scrape(server).value("poet_sink_dead_letters_total", sink="hook") == 1)
            m = Scrape(server)
    assert len(receiver.requests) == 3
    assert m.value("poet_sink_failures_total", sink="hook", retryable="true") == 3
    assert m.value("poet_sink_failures_total", sink="hook", retryable="false") == 0
    assert m.value("poet_sink_retries_total", sink="hook") == 2
    assert m.value("poet_sink_deliveries_total", sink="hook") == 0
    assert m.value("poet_sink_breaker_state", sink="hook") == 1  # open after 3 failures in a row


async def test_a_permanent_sink_failure_is_not_retried(settings, tmp_path):
    with Receiver() as receiver:
        receiver.fail_always(400)
        async with running(settings, sinks_file=sinks_file(tmp_path, receiver.url)) as (server, stub, _):
            await stub.PublishEvents(pb.PublishEventsRequest(events=[event("notify.a")]))
            await until(lambda: Scrape(server).value("poet_sink_dead_letters_total", sink="hook") == 1)
            m = Scrape(server)
    assert m.value("poet_sink_failures_total", sink="hook", retryable="false") == 1
    assert m.value("poet_sink_retries_total", sink="hook") == 0


async def test_a_gate_rejection_of_the_template_is_counted_by_its_check(server, stub):
    failing = CODE + '\nraise RuntimeError("this module cannot be imported")\n'
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=failing))
    m = await settled(server)
    assert m.value("poet_gate_rejections_total", generator="template", reason="import") == 1
    assert m.value("poet_gate_duration_seconds_count", generator="template") == 1
    assert m.value("poet_enhancement_requests_total", domain="base_reliability", status="error") == 1


async def test_a_gemini_version_the_gate_refuses_falls_back_to_the_template(settings):
    reference = generate(EnhancementSpec(function_name="area", original_code=CODE), version="v1").python
    signature = "def area(width: float, height: float) -> float:"
    assert signature in reference
    with GeminiFake() as gemini:
        gemini.push(code_reply(reference.replace(signature, "def area(width: float, height: float = 1.0) -> float:")))
        async with running(settings, gemini_api_key="test-key", gemini_base_url=gemini.base_url,
                           gemini_timeout_seconds=5) as (server, stub, _):
            assert Scrape(server).value("poet_llm_breaker_state") == 0
            response = await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE))
            m = Scrape(server)
    assert response.metadata.generator == "template"
    assert m.value("poet_gate_rejections_total", generator="gemini", reason="signature") == 1
    assert m.value("poet_gate_duration_seconds_count", generator="gemini") == 1
    assert m.value("poet_gate_duration_seconds_count", generator="template") == 1
    assert m.value("poet_llm_calls_total", outcome="gate_rejected") == 1
    assert m.value("poet_llm_requests_total") == 1
    assert m.value("poet_llm_fallbacks_total", reason="gate_rejected") == 1
    assert m.value("poet_llm_breaker_state") == 0  # the service answered: not a breaker failure


def _label_values(scrape: Scrape) -> set[tuple[str, str, str]]:
    return {(name, label, value) for (name, labels) in scrape.samples for label, value in labels}


async def test_no_label_grows_with_the_number_of_functions(server, stub):
    async def use(names):
        for name in names:
            code = CODE.replace("area", name)
            await stub.Enhance(pb.EnhanceRequest(function_name=name, original_code=code))
            await stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name=name, version="v1", feedback_type="user",
                                                               rating=4))
            await stub.GetVersion(pb.GetVersionRequest(function_name=name, version="current"))
            await stub.ListEvents(pb.ListEventsRequest(function_name=name))
            published = event("function.execution", function_name=name, version="v1", success=True)
            published.function_name = name
            await stub.PublishEvents(pb.PublishEventsRequest(events=[published]))

    await use([f"first_{i}" for i in range(2)])
    before = _label_values(Scrape(server))
    await use([f"second_{i}" for i in range(4)])
    after = _label_values(Scrape(server))
    assert after == before, f"label values that came with new functions: {sorted(after - before)}"
    assert not any("first_" in value or "second_" in value for _, _, value in after)


async def test_a_regeneration_by_the_learning_loop_is_counted_by_its_pattern(server, stub):
    await stub.Enhance(pb.EnhanceRequest(function_name="area", original_code=CODE))
    answers = [await stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name="area", version="v1",
                                                                  feedback_type=pb.user, rating=1))
               for _ in range(3)]
    assert answers[-1].status == pb.requires_update
    m = Scrape(server)
    assert m.value("poet_learning_regenerations_total", reason="low_user_rating") == 1
    assert m.total("poet_learning_regenerations_total") == 1
    # A regeneration is the service's own work, not an enhancement request.
    assert m.total("poet_enhancement_requests_total") == 1
    assert m.value("poet_gate_duration_seconds_count", generator="template") == 2
