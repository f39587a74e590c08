"""The learning loop through the public API: evidence in, new versions out."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import struct_pb2

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, resources_pb2
from support import details

DETECTOR = '''
def detect_drift(reference: list, current: list) -> float:
    """Difference of means between the current and the reference sample."""
    return abs(sum(current) / len(current) - sum(reference) / len(reference))
'''

FETCH = '''
def fetch_rate(currency: str) -> float:
    """Exchange rate of a currency (from a flaky upstream)."""
    return {"EUR": 1.08, "GBP": 1.27}[currency]
'''


def event(type_: str, *, function_name: str = "", correlation_id: str = "", **payload) -> events_pb2.Event:
    body = struct_pb2.Struct()
    body.update(payload)
    return events_pb2.Event(type=type_, source="tests", function_name=function_name, correlation_id=correlation_id, payload=body)


async def publish(stub, *events):
    return (await stub.PublishEvents(pb.PublishEventsRequest(events=list(events)))).results


async def wait_for_events(stub, count: int, timeout: float = 15.0, **filters) -> list:
    """The events matching filters, once at least `count` exist (the loop is asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = (await stub.ListEvents(pb.ListEventsRequest(page_size=1000, **filters))).events
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return list(found)
        await asyncio.sleep(0.05)


async def enhance(stub, name: str, code: str, domain: str = "base_reliability"):
    return await stub.Enhance(pb.EnhanceRequest(function_name=name, original_code=code, domain=domain))


async def test_false_positive_drift_alerts_lead_to_a_less_sensitive_version_announced_on_the_stream(stub):
    await enhance(stub, "detect_drift", DETECTOR, domain="ml_monitoring")
    v1 = (await stub.GetVersion(pb.GetVersionRequest(function_name="detect_drift", version="v1"))).version
    stream = stub.StreamEvents(pb.StreamEventsRequest(function_name="detect_drift", live_only=True))
    assert (await stream.read()).HasField("checkpoint")

    # The enhanced function (threshold 0.1) reports six detections: one real drift and
    # five seasonal wobbles just over the threshold.
    scores = {"exec-0": 0.6, "exec-1": 0.12, "exec-2": 0.13, "exec-3": 0.14, "exec-4": 0.15, "exec-5": 0.17}
    await publish(stub, *(
        event("drift.detected", function_name="detect_drift", execution_id=e, model_name="churn", feature_name="activity",
              drift_score=score, method="ks_test", statistical_significance=0.02)
        for e, score in scores.items()
    ))
    # ...and the service raises an alert for each, correlated and caused by the detection.
    alerts = await wait_for_events(stub, 6, event_type="alert.create_external")
    assert len(alerts) == 6
    drifts = (await stub.ListEvents(pb.ListEventsRequest(event_type="drift.detected"))).events
    assert {a.causation_id for a in alerts} == {d.id for d in drifts}
    assert all(a.correlation_id.startswith("drift-churn-") for a in alerts)
    assert len({a.correlation_id for a in alerts}) == 6  # one conversation per alert
    severity = {a.payload["execution_id"]: a.payload["severity"] for a in alerts}
    assert severity == {e: "high" if e == "exec-0" else "low" for e in scores}  # seed rule: > 0.5 and p < 0.05 is high

    # People look at the alerts: five were false positives, one was real.
    verdicts = []
    for alert in alerts:
        verdicts.append(event(
            "feedback.human_validation", correlation_id=alert.correlation_id, execution_id=alert.payload["execution_id"],
            validation_type="drift_accuracy", was_real_drift=alert.payload["execution_id"] == "exec-0", confidence=0.9,
            reason="seasonal", investigation_time_minutes=12,
        ))
    await publish(stub, *verdicts)

    # A less sensitive version is announced on the stream.
    seen = {}
    async def read_until_regenerated():
        while "enhancement.regenerated" not in seen:
            item = await stream.read()
            if item.HasField("event"):
                seen[item.event.type] = item.event
    await asyncio.wait_for(read_until_regenerated(), 15)
    stream.cancel()
    update, regenerated, pattern = seen["function.update"], seen["enhancement.regenerated"], seen["learning.pattern_detected"]
    assert (update.payload["old_version"], update.payload["new_version"]) == ("v1", "v2")
    assert "false-positive rate 83%" in update.payload["reason"]
    assert pattern.payload["pattern_type"] == "threshold_too_sensitive"
    assert update.causation_id == regenerated.causation_id == pattern.causation_id
    trigger = (await stub.ListEvents(pb.ListEventsRequest(event_type="feedback.human_validation"))).events
    assert update.causation_id in {t.id for t in trigger}
    # the new threshold (0.1 * (1 + 5/6) = 0.183) would have silenced all five false alarms, not the real drift
    assert regenerated.payload["expected_impact"]["false_positive_reduction"] == 1.0
    assert regenerated.payload["expected_impact"]["accuracy_improvement"] == pytest.approx(5 / 6, abs=1e-4)
    assert any("drift_threshold" in c["description"] for c in update.payload["changes"])

    versions = (await stub.ListVersions(pb.ListVersionsRequest(function_name="detect_drift"))).versions
    assert [(v.version, v.status) for v in versions] == [("v1", resources_pb2.deprecated), ("v2", resources_pb2.active)]
    assert versions[0].metrics.false_positive_rate == pytest.approx(5 / 6)
    v2 = (await stub.GetVersion(pb.GetVersionRequest(function_name="detect_drift", version="current"))).version
    assert v2.version == "v2" and v2.parent_version == "v1"
    assert v2.params["drift_threshold"] > v1.params["drift_threshold"]
    assert v2.update_reason == update.payload["reason"]
    assert any(c.type == "params" and "drift_threshold" in c.description for c in v2.changes)
    assert v2.code_diff.startswith("--- detect_drift v1")


async def test_low_ratings_answer_requires_update_once_and_replays_the_same_answer(stub):
    await enhance(stub, "fetch_rate", FETCH)
    answers = []
    for i in range(3):
        answers.append(await stub.SubmitFeedback(pb.SubmitFeedbackRequest(
            function_name="fetch_rate", version="v1", feedback_type=pb.user, rating=1, request_id=f"fb-{i}",
            suggestions=["validate the currency code"],
        )))
    assert [a.status for a in answers] == [pb.accepted, pb.accepted, pb.requires_update]
    assert answers[2].new_version == "v2"
    assert "average rating 1.0 over 3 ratings" in answers[2].update_reason
    replay = await stub.SubmitFeedback(pb.SubmitFeedbackRequest(
        function_name="fetch_rate", version="v1", feedback_type=pb.user, rating=1, request_id="fb-2",
        suggestions=["validate the currency code"],
    ))
    assert replay == answers[2]
    update = (await stub.ListEvents(pb.ListEventsRequest(event_type="function.update"))).events
    assert len(update) == 1 and update[0].causation_id == answers[2].feedback_id
    v2 = (await stub.GetVersion(pb.GetVersionRequest(function_name="fetch_rate", version="v2"))).version
    assert v2.optimize_for == "safety"


async def test_concurrent_feedback_produces_one_new_version(stub):
    await enhance(stub, "fetch_rate", FETCH)
    answers = await asyncio.gather(*(
        stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name="fetch_rate", version="v1", feedback_type=pb.user, rating=1))
        for _ in range(12)
    ))
    assert sum(a.status == pb.requires_update for a in answers) == 1
    versions = (await stub.ListVersions(pb.ListVersionsRequest(function_name="fetch_rate"))).versions
    assert [v.version for v in versions] == ["v1", "v2"]
    assert len((await stub.ListEvents(pb.ListEventsRequest(event_type="function.update"))).events) == 1


async def test_failing_executions_make_a_version_with_more_retries(stub):
    await enhance(stub, "fetch_rate", FETCH)
    v1 = (await stub.GetVersion(pb.GetVersionRequest(function_name="fetch_rate", version="v1"))).version
    runs = []
    for i in range(25):
        failed = i % 3 == 0  # 9 of 25 fail: 36 %
        payload = dict(function_name="fetch_rate", version="v1", execution_id=str(uuid.uuid4()),
                       status="failure" if failed else "success", metrics={"duration_ms": 4.0})
        if failed:
            payload["error"] = {"type": "ConnectionError", "message": "upstream reset"}
        runs.append(event("function.execution", **payload))
    await publish(stub, *runs)
    updates = await wait_for_events(stub, 1, event_type="function.update")
    assert updates and updates[0].payload["new_version"] == "v2"
    versions = (await stub.ListVersions(pb.ListVersionsRequest(function_name="fetch_rate"))).versions
    assert versions[0].metrics.execution_count == 25
    assert versions[0].metrics.error_rate == pytest.approx(9 / 25)
    v2 = (await stub.GetVersion(pb.GetVersionRequest(function_name="fetch_rate", version="v2"))).version
    assert v2.params["max_retries"] == v1.params["max_retries"] + 2
    assert "error rate 36% over 25 executions" in v2.update_reason


async def test_unhelpful_retraining_is_flagged_as_a_false_positive(stub):
    await enhance(stub, "detect_drift", DETECTOR, domain="ml_monitoring")
    await publish(stub, event("drift.detected", function_name="detect_drift", execution_id="x1", model_name="churn", drift_score=0.9,
                              statistical_significance=0.001))
    (alert,) = await wait_for_events(stub, 1, event_type="alert.create_external")
    assert alert.payload["severity"] == "critical"
    (retrained,) = await publish(stub, event("feedback.model_retrained", correlation_id=alert.correlation_id, execution_id="x1",
                                             model_name="churn", performance_before=0.81, performance_after=0.80,
                                             retraining_cost_usd=120.0, improvement_confirmed=False))
    (flag,) = await wait_for_events(stub, 1, event_type="learning.false_positive_detected")
    assert flag.causation_id == retrained.id
    assert flag.payload["wasted_cost"] == 120.0
    correlated = await stub.ListEvents(pb.ListEventsRequest(correlation_id=alert.correlation_id))
    assert [e.type for e in correlated.events] == ["alert.create_external", "feedback.model_retrained", "learning.false_positive_detected"]
    version = (await stub.ListVersions(pb.ListVersionsRequest(function_name="detect_drift"))).versions[0]
    assert version.metrics.false_positive_rate == 1.0 and version.metrics.drift_validations == 1


async def test_rollback_and_deprecate(stub):
    await enhance(stub, "fetch_rate", FETCH)
    await enhance(stub, "fetch_rate", FETCH + "\n# revised\n")
    rolled = await stub.ActivateVersion(pb.ActivateVersionRequest(function_name="fetch_rate", version="v1", reason="v2 misbehaves"))
    assert rolled.previous_version == "v2" and rolled.version.current
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="fetch_rate"))
    assert listing.current_version == "v1"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.DeprecateVersion(pb.DeprecateVersionRequest(function_name="fetch_rate", version="v1"))
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(failure.value)["ErrorInfo"].reason == "VERSION_IS_CURRENT"
    deprecated = await stub.DeprecateVersion(pb.DeprecateVersionRequest(function_name="fetch_rate", version="v2"))
    assert deprecated.version.status == resources_pb2.deprecated
    again = await stub.ActivateVersion(pb.ActivateVersionRequest(function_name="fetch_rate", version="v2"))
    assert again.version.status == resources_pb2.active and again.version.current
    types = [e.type for e in (await stub.ListEvents(pb.ListEventsRequest(function_name="fetch_rate"))).events]
    assert types.count("version.activated") == 2 and types.count("version.deprecated") == 1
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ActivateVersion(pb.ActivateVersionRequest(function_name="fetch_rate", version="v9"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("reserved", ["enhancement.completed", "function.update", "version.activated", "function.feedback"])
async def test_clients_cannot_publish_the_service_s_own_event_types(stub, reserved):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await publish(stub, event(reserved, function_name="x"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_derived_events_are_not_repeated_after_a_restart(settings):
    from poet_grpc._gen.poet.v1 import poet_service_pb2_grpc
    from poet_grpc.api.server import create_server

    for run in range(2):
        server, port = await create_server(settings)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            if run == 0:
                await enhance(stub, "detect_drift", DETECTOR, domain="ml_monitoring")
                await publish(stub, event("drift.detected", function_name="detect_drift", execution_id="r1", drift_score=0.5))
            alerts = await wait_for_events(stub, 1, event_type="alert.create_external")
            await asyncio.sleep(0.3)  # give a replaying loop the chance to append a duplicate
            alerts = (await stub.ListEvents(pb.ListEventsRequest(event_type="alert.create_external"))).events
            assert len(alerts) == 1
        await server.stop(grace=1)
