"""Every logged feedback is reviewed exactly once: by SubmitFeedback, or by the
learning loop's consumer when SubmitFeedback never got to it (a crash between
the commit and the review), never both."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest_asyncio

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.core.feedback import FUNCTION_FEEDBACK, Feedback
from poet_grpc.api.server import create_server

CODE = "def fetch_rate(currency: str) -> float:\n    return {\"EUR\": 1.08, \"GBP\": 1.27}[currency]\n"


@pytest_asyncio.fixture
async def served(settings):
    # Two low ratings condemn a version.
    server, port = await create_server(dataclasses.replace(settings, policy_min_ratings=2))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        await stub.Enhance(pb.EnhanceRequest(function_name="fetch_rate", original_code=CODE))
        yield server, stub
    await server.stop(grace=1)


def rate(version: str = "v1", **fields) -> pb.SubmitFeedbackRequest:
    return pb.SubmitFeedbackRequest(function_name="fetch_rate", version=version, feedback_type=pb.user, rating=1, **fields)


async def log_without_review(server, version: str = "v1"):
    """A feedback committed as SubmitFeedback commits it, with no review after: what
    a crash between the two leaves."""
    core = server.core
    event = core.events.new_event(FUNCTION_FEEDBACK, dataclasses.asdict(Feedback("fetch_rate", version, "user", rating=1)),
                                  source="poet.api")
    (result,) = await core.events.append([event])
    return dataclasses.replace(event, position=result.position)


async def caught_up(server, position: int) -> None:
    """Wait until the learning loop's consumer has handled the log up to position."""
    db = server.core.db
    for _ in range(300):
        if await db.call(lambda store: store.consumer_position("learning")) >= position:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the learning loop's consumer did not get there")


async def versions(stub) -> list[str]:
    return [v.version for v in (await stub.ListVersions(pb.ListVersionsRequest(function_name="fetch_rate"))).versions]


async def updates(stub) -> list[tuple[str, str]]:
    events = (await stub.ListEvents(pb.ListEventsRequest(event_type="function.update"))).events
    return [(e.causation_id, e.payload["new_version"]) for e in events]


async def test_a_feedback_nobody_reviewed_is_reviewed_by_the_loop(served):
    server, stub = served
    first = await stub.SubmitFeedback(rate(request_id="fb-1"))
    assert first.status == pb.accepted
    lost = await log_without_review(server)
    await caught_up(server, lost.position)
    assert await versions(stub) == ["v1", "v2"]
    # The new version is the unreviewed feedback's doing, not the first one's
    # (which was answered accepted and keeps that answer).
    assert await updates(stub) == [(lost.id, "v2")]
    assert await stub.SubmitFeedback(rate(request_id="fb-1")) == first


async def test_the_loop_handing_over_a_reviewed_feedback_changes_nothing(served):
    server, stub = served
    await stub.SubmitFeedback(rate())
    answer = await stub.SubmitFeedback(rate(request_id="fb-2"))
    assert (answer.status, answer.new_version) == (pb.requires_update, "v2")
    # Roll back: v1 is current again with the evidence that condemned it. A second
    # review of the feedback would make a v3 from it.
    await stub.ActivateVersion(pb.ActivateVersionRequest(function_name="fetch_rate", version="v1"))
    feedback = await server.core.db.call(lambda store: store.get_event(answer.feedback_id))
    again = await server.core.learning.review_feedback(feedback)  # what the consumer does with it
    assert again is not None and again.version == "v2"
    await caught_up(server, await server.core.db.call(lambda store: store.last_position()))
    assert await versions(stub) == ["v1", "v2"]
    assert await updates(stub) == [(answer.feedback_id, "v2")]
    assert await stub.SubmitFeedback(rate(request_id="fb-2")) == answer


async def test_many_feedbacks_make_one_version_with_the_consumer_reviewing_too(served):
    server, stub = served
    answers = await asyncio.gather(*(stub.SubmitFeedback(rate(request_id=f"fb-{i}")) for i in range(10)))
    assert [a.status for a in answers].count(pb.requires_update) == 1
    await caught_up(server, await server.core.db.call(lambda store: store.last_position()))
    assert await versions(stub) == ["v1", "v2"]
    (cause,) = [a.feedback_id for a in answers if a.status == pb.requires_update]
    assert await updates(stub) == [(cause, "v2")]
    # Each retry gets the answer its first call got.
    retried = await asyncio.gather(*(stub.SubmitFeedback(rate(request_id=f"fb-{i}")) for i in range(10)))
    assert list(retried) == list(answers)
