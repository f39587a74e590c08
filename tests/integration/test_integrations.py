"""Integrations through a real server: outbound sinks against local HTTP receivers
that fail and recover, dead letters over the API, inbound mappings."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from contextlib import asynccontextmanager

import grpc
import pytest
from google.protobuf import struct_pb2

from fakes.receivers import Receiver, Reply
from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.integrations import SinksFileError
from poet_grpc.store import Store
from support import violated_fields
from postgres_support import sqlite_only

DETECTOR = '''
def detect(reference: list, current: list) -> float:
    """Difference of means between the current and the reference sample."""
    return abs(sum(current) / len(current) - sum(reference) / len(reference))
'''
FAST = {"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05, "timeout_seconds": 2}


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def sinks_file(tmp_path, *sinks) -> str:
    path = tmp_path / "sinks.json"
    path.write_text(json.dumps([{**FAST, **s} for s in sinks]))
    return str(path)


@asynccontextmanager
async def running(settings, tmp_path, *sinks):
    from poet_grpc.api.server import create_server

    if sinks:
        settings = dataclasses.replace(settings, sinks_file=sinks_file(tmp_path, *sinks))
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, poet_service_pb2_grpc.PoetServiceStub(channel)
    finally:
        await server.stop(grace=1)


def event(type_: str, *, function_name: str = "", correlation_id: str = "", id: str = "", **payload) -> events_pb2.Event:
    body = struct_pb2.Struct()
    body.update(payload)
    return events_pb2.Event(id=id, type=type_, source="tests", function_name=function_name,
                            correlation_id=correlation_id, payload=body)


async def publish(stub, *events):
    return (await stub.PublishEvents(pb.PublishEventsRequest(events=list(events)))).results


async def until(condition, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await _value(condition())):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return result


async def _value(result):
    return await result if inspect.isawaitable(result) else result


async def dead_letters(stub, sink: str = "") -> list:
    return list((await stub.ListDeadLetters(pb.ListDeadLettersRequest(sink=sink))).dead_letters)


def webhook(url: str, name: str = "hook", **extra) -> dict:
    return {"name": name, "kind": "webhook", "url": url, "event_types": ["notify.*"], **extra}


async def test_a_receiver_that_fails_twice_then_recovers_gets_each_event_once_in_log_order(settings, tmp_path, receiver):
    receiver.script(500, Reply(429, {}, {"Retry-After": "0"}))  # the first event fails twice
    async with running(settings, tmp_path, webhook(receiver.url)) as (server, stub):
        results = await publish(stub, *(
            event(f"notify.{kind}", function_name=fn, step=i)
            for i, (fn, kind) in enumerate([("f", "a"), ("g", "a"), ("f", "b"), ("other", "skip"), ("g", "b")])
        ))
        await publish(stub, event("unrelated.type", function_name="f"))
        await until(lambda: len(receiver.delivered()) == 5)
        await asyncio.sleep(0.1)
        assert [r.status for r in receiver.requests] == [500, 429, 200, 200, 200, 200, 200]
        delivered = [r.body for r in receiver.delivered()]
        assert [d["id"] for d in delivered] == [r.id for r in results]  # log order, each once
        assert [int(d["position"]) for d in delivered] == [r.position for r in results]
        assert delivered[0]["type"] == "notify.a" and delivered[0]["payload"] == {"step": 0.0}
        assert delivered[0]["timestamp"].endswith("Z")
        assert await dead_letters(stub) == []
        await until(lambda: _when(server.core.db.call(lambda store: store.consumer_position("sink:hook")),
                                  lambda position: position >= results[-1].position))

    # After a restart the sink resumes from its durable position: nothing is sent twice.
    async with running(settings, tmp_path, webhook(receiver.url)) as (server, stub):
        await publish(stub, event("notify.c", function_name="f"))
        await until(lambda: len(receiver.delivered()) == 6)
        await asyncio.sleep(0.1)
        assert [r.body["type"] for r in receiver.delivered()][-1] == "notify.c"
        assert len(receiver.requests) == 8


async def test_a_failing_event_is_not_overtaken_by_later_events_of_its_function(settings, tmp_path, receiver):
    receiver.fail_always(503)
    async with running(settings, tmp_path, webhook(receiver.url, max_attempts=50)) as (server, stub):
        await publish(stub, event("notify.a", function_name="f", n=1), event("notify.b", function_name="f", n=2))
        await until(lambda: len(receiver.requests) >= 3)
        assert {r.body["payload"]["n"] for r in receiver.requests} == {1}  # only the first, retried
        receiver.recover()
        await until(lambda: len(receiver.delivered()) == 2)
        assert [r.body["payload"]["n"] for r in receiver.delivered()] == [1, 2]


async def test_a_400_goes_to_the_dead_letters_at_once_and_the_sink_moves_on(settings, tmp_path, receiver):
    receiver.script(400)
    async with running(settings, tmp_path, webhook(receiver.url)) as (server, stub):
        first, second = await publish(stub, event("notify.bad", function_name="f"), event("notify.good", function_name="f"))
        await until(lambda: len(receiver.delivered()) == 1)
        assert [r.status for r in receiver.requests] == [400, 200]
        [letter] = await dead_letters(stub, "hook")
        assert (letter.sink, letter.event_id, letter.event_position, letter.event_type) == ("hook", first.id, first.position, "notify.bad")
        assert letter.attempts == 1 and letter.last_error.startswith("HTTP 400") and letter.status == pb.pending
        assert letter.function_name == "f" and letter.first_failure_time.seconds > 0


async def test_max_attempts_exhausted_goes_to_the_dead_letters(settings, tmp_path, receiver):
    receiver.fail_always(502)
    async with running(settings, tmp_path, webhook(receiver.url, max_attempts=3)) as (server, stub):
        [result] = await publish(stub, event("notify.x", function_name="f"))
        letters = await until(lambda: dead_letters(stub))
        assert len(receiver.requests) == 3
        assert letters[0].attempts == 3 and "HTTP 502" in letters[0].last_error and letters[0].event_id == result.id


async def test_the_breaker_opens_sends_nothing_while_open_and_recovers(settings, tmp_path, receiver):
    receiver.fail_always(503)
    sink = webhook(receiver.url, max_attempts=20, breaker_threshold=2, breaker_reset_seconds=0.5)
    async with running(settings, tmp_path, sink) as (server, stub):
        await publish(stub, event("notify.x", function_name="f"))
        await until(lambda: len(receiver.requests) == 2)
        breaker = server.core.integrations.sink("hook").breaker
        await until(lambda: breaker.state == "open")
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == 2  # nothing while open
        receiver.recover()
        await until(lambda: len(receiver.delivered()) == 1)
        assert receiver.requests[2].at - receiver.requests[1].at >= 0.45  # the half-open trial
        await until(lambda: breaker.state == "closed")
        assert await dead_letters(stub) == []


async def test_dead_letters_are_listed_and_replayed_over_the_api(settings, tmp_path, receiver):
    receiver.fail_always(400)
    async with running(settings, tmp_path, webhook(receiver.url)) as (server, stub):
        results = await publish(stub, *(event("notify.x", function_name="f", n=i) for i in range(3)))
        await until(lambda: len(receiver.requests) == 3)
        await until(lambda: dead_letters(stub, "hook"))
        letters = await until(lambda: _when(dead_letters(stub, "hook"), lambda found: len(found) == 3))
        assert [d.event_id for d in letters] == [r.id for r in results]

        page = await stub.ListDeadLetters(pb.ListDeadLettersRequest(sink="hook", page_size=2))
        assert len(page.dead_letters) == 2 and page.next_page_token
        rest = await stub.ListDeadLetters(pb.ListDeadLettersRequest(sink="hook", page_size=2, page_token=page.next_page_token))
        assert [d.id for d in rest.dead_letters] == [letters[2].id] and not rest.next_page_token

        receiver.recover()
        replay = await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="hook", ids=[letters[1].id]))
        assert [(d.id, d.status) for d in replay.dead_letters] == [(letters[1].id, pb.replayed)]
        replay = await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="hook", all=True))
        assert [(d.id, d.status) for d in replay.dead_letters] == [(letters[0].id, pb.replayed), (letters[2].id, pb.replayed)]
        assert [r.body["payload"]["n"] for r in receiver.delivered()] == [1, 0, 2]
        assert {d.status for d in await dead_letters(stub)} == {pb.replayed}
        assert (await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="hook", all=True))).dead_letters == []

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="nope", all=True))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="hook", ids=["x"]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(caught.value) == {"ids[0]"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="hook"))
        assert violated_fields(caught.value) == {"ids"}


async def _when(awaitable, predicate):
    found = await awaitable
    return found if predicate(found) else None


async def test_a_failed_replay_stays_pending_with_its_new_error(settings, tmp_path, receiver):
    receiver.script(400)
    async with running(settings, tmp_path, webhook(receiver.url, max_attempts=2)) as (server, stub):
        await publish(stub, event("notify.x", function_name="f"))
        [letter] = await until(lambda: dead_letters(stub))
        receiver.fail_always(500)
        [after] = (await stub.ReplayDeadLetters(pb.ReplayDeadLettersRequest(sink="hook", all=True))).dead_letters
        assert after.status == pb.pending and after.attempts == 3 and "HTTP 500" in after.last_error


async def test_pagerduty_success_appends_alert_created_external(settings, tmp_path, receiver):
    receiver.default = Reply(202, {"status": "success", "message": "Event processed", "dedup_key": "pd-key-1"})
    sink = {"name": "oncall", "kind": "pagerduty", "url": receiver.url + "/v2/enqueue", "routing_key": "env:POET_TEST_PD_KEY"}
    import os

    os.environ["POET_TEST_PD_KEY"] = "rk-123"
    try:
        async with running(settings, tmp_path, sink) as (server, stub):
            await publish(stub, event("drift.detected", function_name="detect", execution_id="exec-1", model_name="churn",
                                      drift_score=0.7, statistical_significance=0.01))
            created = await until(lambda: _events(stub, "alert.created_external"))
            [alert] = await _events(stub, "alert.create_external")
            [request] = receiver.requests
            assert request.path == "/v2/enqueue"
            assert request.body["routing_key"] == "rk-123" and request.body["dedup_key"] == alert.correlation_id
            assert request.body["payload"]["severity"] == "error"  # high
            assert request.body["payload"]["custom_details"]["poet_execution_id"] == "exec-1"
            [confirmation] = created
            assert confirmation.causation_id == alert.id and confirmation.correlation_id == alert.correlation_id
            assert dict(confirmation.payload) == {"external_id": "pd-key-1", "poet_execution_id": "exec-1",
                                                  "system": "pagerduty", "sink": "oncall"}
            await asyncio.sleep(0.2)
            assert len(receiver.requests) == 1  # its own confirmation is not paged
    finally:
        del os.environ["POET_TEST_PD_KEY"]


async def _events(stub, event_type: str) -> list:
    return list((await stub.ListEvents(pb.ListEventsRequest(event_type=event_type))).events)


async def test_slack_and_mlflow_sinks_deliver_their_formats(settings, tmp_path, receiver):
    sinks = [
        {"name": "chat", "kind": "slack", "url": receiver.url + "/slack", "event_types": ["alert.create_external"]},
        {"name": "tracking", "kind": "mlflow", "url": receiver.url + "/mlflow", "event_types": ["drift.detected"]},
    ]
    async with running(settings, tmp_path, *sinks) as (server, stub):
        await publish(stub, event("drift.detected", function_name="detect", execution_id="e-7", model_name="churn",
                                  drift_score=0.2, mlflow_run_id="run-1"))
        await until(lambda: any(r.path == "/slack" for r in receiver.requests)
                    and any(r.path.startswith("/mlflow") and r.body["key"] == "poet.drift_score" for r in receiver.requests))
        slack = next(r for r in receiver.requests if r.path == "/slack")
        assert "alert.create_external" in slack.body["text"] and slack.body["blocks"]
        tags = {r.body["key"]: r.body["value"] for r in receiver.requests if r.path == "/mlflow/api/2.0/mlflow/runs/set-tag"}
        assert tags["poet.execution_id"] == "e-7" and tags["poet.drift_score"] == "0.2"


@sqlite_only
async def test_inbound_mappings_produce_their_events_once_even_after_a_restart(settings, tmp_path):
    async with running(settings, tmp_path) as (server, stub):
        await stub.Enhance(pb.EnhanceRequest(function_name="detect", original_code=DETECTOR, domain="ml_monitoring"))
        await publish(stub, event("drift.detected", function_name="detect", execution_id="exec-1", model_name="churn",
                                  drift_score=0.4))
        alert = (await until(lambda: _events(stub, "alert.create_external")))[0]
        resolved, tagged, transpiled = await publish(
            stub,
            event("external.pagerduty.resolved", poet_execution_id="exec-1", resolution="false_alarm",
                  duration_minutes=12, correlation_id=alert.correlation_id),
            event("external.mlflow.experiment_tagged", experiment_id="exp-3",
                  tags={"poet_execution_id": "exec-1", "drift_confirmed": "true"}),
            event("transpilation.completed", function_name="score", dana_source="def score(): pass",
                  python_output="def score():\n    pass\n", duration=42),
        )
        await until(lambda: _mapped(stub))

    # A crash before the consumer saved its position: it replays, appends nothing twice.
    with Store(settings.db) as store:
        store.set_consumer_position("inbound", 0)
    async with running(settings, tmp_path) as (server, stub):
        await until(lambda: server.core.db.call(lambda s: s.consumer_position("inbound")))
        [feedback] = await _events(stub, "feedback.alert_resolved")
        assert feedback.source == "external.pagerduty" and feedback.causation_id == resolved.id
        assert feedback.correlation_id == alert.correlation_id and feedback.function_name == "detect"
        assert dict(feedback.payload) == {"execution_id": "exec-1", "resolution_type": "false_alarm",
                                          "resolution_time_minutes": 12, "was_useful": False}
        [validation] = await _events(stub, "feedback.mlflow_validation")
        assert validation.source == "external.mlflow" and validation.causation_id == tagged.id
        assert dict(validation.payload) == {"execution_id": "exec-1", "validation_type": "confirmed_drift",
                                            "experiment_id": "exp-3", "confidence": 0.8}
        raw, normalised = await _events(stub, "transpilation.completed")
        assert raw.id == transpiled.id
        assert normalised.source == "aitomatic.transpilation_agent" and normalised.causation_id == transpiled.id
        assert dict(normalised.payload) == {"function_name": "score", "dana_source": "def score(): pass",
                                            "python_output": "def score():\n    pass\n", "transpilation_time_ms": 42}
        # The false alarm is a drift verdict the learning loop counts.
        with Store(settings.db) as store:
            verdict = store._db.execute("SELECT verdict FROM ml_executions WHERE execution_id = 'exec-1'").fetchone()
        assert verdict == ("false_positive",)


async def _mapped(stub) -> bool:
    return (len(await _events(stub, "feedback.alert_resolved")) == 1
            and len(await _events(stub, "feedback.mlflow_validation")) == 1
            and len(await _events(stub, "transpilation.completed")) == 2)


@sqlite_only
async def test_a_bad_sinks_file_stops_the_server_with_the_problem_named(settings, tmp_path):
    from poet_grpc.api.server import create_server

    path = tmp_path / "sinks.json"
    path.write_text(json.dumps([{"name": "x", "kind": "email", "url": "http://x", "event_types": ["*"]}]))
    with pytest.raises(SinksFileError, match=r"sinks\[0\] \(x\)\.kind: must be one of webhook, pagerduty, slack, mlflow"):
        await create_server(dataclasses.replace(settings, sinks_file=str(path)))
    assert not settings.db.exists()  # refused before opening anything
