"""ListVersions, GetVersion and SubmitFeedback against a real server."""

from __future__ import annotations

import grpc
import pytest

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, resources_pb2
from support import details, violated_fields

CODE = "def double(x: int) -> int:\n    return 2 * x\n"


async def make_versions(stub, count: int, name: str = "double") -> None:
    for i in range(count):
        await stub.Enhance(pb.EnhanceRequest(function_name=name, original_code=CODE + f"# revision {i}\n"))


async def test_get_version_returns_what_was_stored(stub):
    await make_versions(stub, 1)
    got = (await stub.GetVersion(pb.GetVersionRequest(function_name="double", version="v1"))).version
    assert got.function_name == "double" and got.version == "v1"
    assert got.status == resources_pb2.active
    assert got.current
    assert got.original_code.startswith(CODE)
    assert "def double(x: int) -> int" in got.enhanced_code.python
    assert got.params["max_retries"] >= 0
    assert got.metadata.generator == "template"
    assert got.created_at.seconds > 0
    current = (await stub.GetVersion(pb.GetVersionRequest(function_name="double", version="current"))).version
    assert current == got


async def test_list_versions_pages_with_opaque_tokens(stub):
    await make_versions(stub, 5)
    seen, token = [], ""
    while True:
        page = await stub.ListVersions(pb.ListVersionsRequest(function_name="double", page_size=2, page_token=token))
        assert page.current_version == "v5"
        assert all(not v.enhanced_code.python for v in page.versions), "listing carries no code"
        seen += [v.version for v in page.versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["v1", "v2", "v3", "v4", "v5"]


@pytest.mark.parametrize(
    "request_, code, reason",
    [
        (pb.GetVersionRequest(function_name="double", version="v9"), grpc.StatusCode.NOT_FOUND, "VERSION_NOT_FOUND"),
        (pb.GetVersionRequest(function_name="nobody", version="v1"), grpc.StatusCode.NOT_FOUND, "VERSION_NOT_FOUND"),
        (pb.GetVersionRequest(function_name="double", version="latest"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_get_version_errors(stub, request_, code, reason):
    await make_versions(stub, 1)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetVersion(request_)
    assert failure.value.code() == code
    assert details(failure.value)["ErrorInfo"].reason == reason


async def test_list_versions_of_unknown_function_is_not_found(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListVersions(pb.ListVersionsRequest(function_name="nobody"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(failure.value)["ResourceInfo"].resource_name == "nobody"


@pytest.mark.parametrize("token", ["garbage", "eyJhIjogLTF9", "x" * 50])
async def test_bad_page_token_is_invalid(stub, token):
    await make_versions(stub, 1)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListVersions(pb.ListVersionsRequest(function_name="double", page_token=token))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(failure.value) == {"page_token"}


async def test_page_token_of_another_function_is_rejected(stub):
    await make_versions(stub, 3)
    page = await stub.ListVersions(pb.ListVersionsRequest(function_name="double", page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListVersions(pb.ListVersionsRequest(function_name="other", page_token=page.next_page_token))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_feedback_is_recorded_and_folded_into_metrics(stub):
    await make_versions(stub, 1)
    first = await stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(function_name="double", version="v1", feedback_type=pb.user, rating=5, execution_id="e1")
    )
    assert first.status == pb.accepted and first.feedback_id and not first.new_version
    await stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            function_name="double",
            version="v1",
            feedback_type=pb.performance,
            rating=2,
            metrics=resources_pb2.PerformanceMetrics(success_rate=0.9, avg_duration=12.5, error_rate=0.1),
            suggestions=["cache results"],
        )
    )
    await stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name="double", version="v1", feedback_type=pb.system))
    metrics = (await stub.ListVersions(pb.ListVersionsRequest(function_name="double"))).versions[0].metrics
    assert metrics.feedback_count == 3
    assert metrics.rating_count == 2
    assert metrics.avg_rating == pytest.approx(3.5)
    assert (metrics.success_rate, metrics.avg_duration, metrics.error_rate) == pytest.approx((0.9, 12.5, 0.1))
    events = (await stub.ListEvents(pb.ListEventsRequest(function_name="double", event_type="function.feedback"))).events
    assert len(events) == 3
    assert events[0].id == first.feedback_id
    assert events[1].payload["feedback_type"] == "performance"
    assert list(events[1].payload["suggestions"]) == ["cache results"]


async def test_feedback_request_id_records_once(stub):
    await make_versions(stub, 1)
    request = pb.SubmitFeedbackRequest(function_name="double", version="v1", feedback_type=pb.user, rating=4, request_id="fb-1")
    first = await stub.SubmitFeedback(request)
    second = await stub.SubmitFeedback(request)
    assert first.feedback_id == second.feedback_id
    metrics = (await stub.ListVersions(pb.ListVersionsRequest(function_name="double"))).versions[0].metrics
    assert metrics.feedback_count == 1


@pytest.mark.parametrize(
    "request_, code, fields",
    [
        (pb.SubmitFeedbackRequest(function_name="double", version="v7", feedback_type=pb.user), grpc.StatusCode.NOT_FOUND, None),
        (pb.SubmitFeedbackRequest(function_name="double", version="v1"), grpc.StatusCode.INVALID_ARGUMENT, {"feedback_type"}),
        (
            pb.SubmitFeedbackRequest(function_name="double", version="v1", feedback_type=pb.user, rating=9),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"rating"},
        ),
        (
            pb.SubmitFeedbackRequest(
                function_name="double",
                version="v1",
                feedback_type=pb.user,
                metrics=resources_pb2.PerformanceMetrics(success_rate=1.5, error_rate=-1),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            {"metrics.success_rate", "metrics.error_rate"},
        ),
        (pb.SubmitFeedbackRequest(version="v1", feedback_type=pb.user), grpc.StatusCode.INVALID_ARGUMENT, {"function_name"}),
    ],
)
async def test_invalid_feedback_changes_nothing(stub, request_, code, fields):
    await make_versions(stub, 1)
    before = await stub.ListEvents(pb.ListEventsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SubmitFeedback(request_)
    assert failure.value.code() == code
    if fields:
        assert violated_fields(failure.value) == fields
    assert await stub.ListEvents(pb.ListEventsRequest()) == before
