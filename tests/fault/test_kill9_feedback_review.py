"""Fault test: kill -9 the server after a feedback's commit and before its review.

The review is held open by a slow generator: the server is configured for Gemini,
and a local fake of the Gemini API answers only after minutes, so once the fake
has the regeneration's request the feedback is committed and its review is under
way. The server is killed there, then restarted without Gemini. The feedback that
should have produced v2 must produce it (once), and a retry of the SubmitFeedback
call with the same request_id must answer requires_update with v2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from fakes.gemini_server import GeminiFake, Reply
from test_kill9 import start_server as start_kill9_server
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc

CODE = "def fetch_rate(currency: str) -> float:\n    return {\"EUR\": 1.08, \"GBP\": 1.27}[currency]\n"
FEEDBACK = pb.SubmitFeedbackRequest(
    function_name="fetch_rate", version="v1", feedback_type=pb.user, rating=1, request_id="fb-crash",
    suggestions=["validate the currency code"],
)


def start_server(db: Path, **env: str) -> tuple[subprocess.Popen, str]:
    # One low rating is enough evidence for a new version.
    return start_kill9_server(db, POET_POLICY_MIN_RATINGS="1", **env)


def kill9(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    if process.stdout:
        process.stdout.close()


def rows(db: Path, sql: str) -> list[tuple]:
    """Read the file as it is (the server may be running: WAL lets readers in)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def enhance(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        response = await stub.Enhance(pb.EnhanceRequest(function_name="fetch_rate", original_code=CODE), timeout=60)
        assert response.version == "v1"


async def feedback_then_kill9_during_its_review(address: str, gemini: GeminiFake, process: subprocess.Popen) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        call = asyncio.ensure_future(stub.SubmitFeedback(FEEDBACK, timeout=120))
        deadline = time.monotonic() + 60
        while not gemini.requests:  # the review is generating v2: the feedback is committed
            assert not call.done(), f"the feedback was answered before its review generated: {call.result()}"
            assert time.monotonic() < deadline, "the review never asked the generator"
            await asyncio.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError) as killed:
            await call
        assert killed.value.code() == grpc.StatusCode.UNAVAILABLE


async def after_restart(address: str, db: Path, feedback_id: str, *, retry_first: bool) -> pb.SubmitFeedbackResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)

        async def versions() -> list[str]:
            listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="fetch_rate"), timeout=10)
            return [v.version for v in listing.versions]

        if not retry_first:
            # Nobody asks again: the learning loop's consumer does the lost review itself.
            deadline = time.monotonic() + 30
            while await versions() == ["v1"]:
                assert time.monotonic() < deadline, "the stored feedback was never reviewed after the restart"
                await asyncio.sleep(0.1)
        answer = await stub.SubmitFeedback(FEEDBACK, timeout=60)
        # Once the consumer has passed the feedback too, there is still one new version.
        (position,) = rows(db, f"SELECT position FROM events WHERE id = '{feedback_id}'")[0]
        deadline = time.monotonic() + 30
        while not rows(db, f"SELECT 1 FROM consumers WHERE name = 'learning' AND position >= {position}"):
            assert time.monotonic() < deadline, "the learning loop's consumer did not get past the feedback"
            await asyncio.sleep(0.1)
        assert await versions() == ["v1", "v2"]
        updates = (await stub.ListEvents(pb.ListEventsRequest(event_type="function.update"), timeout=10)).events
        assert [(u.causation_id, u.payload["new_version"]) for u in updates] == [(feedback_id, "v2")]
        return answer


@pytest.mark.timeout(300)
@pytest.mark.parametrize("retry_first", [True, False], ids=["retried-at-once", "reviewed-by-the-loop"])
def test_feedback_committed_before_kill9_is_reviewed_after_restart(tmp_path, retry_first):
    db = tmp_path / "poet.db"
    process, address = start_server(db)
    try:
        asyncio.run(enhance(address))
    finally:
        kill9(process)

    # The fake never answers in time (it is stopped first), so the review hangs in Gemini.
    with GeminiFake(default=Reply(delay_seconds=600)) as gemini:
        process, address = start_server(
            db, POET_GEMINI_API_KEY="test-key", POET_GEMINI_BASE_URL=gemini.base_url, POET_GEMINI_TIMEOUT_SECONDS="300"
        )
        try:
            asyncio.run(feedback_then_kill9_during_its_review(address, gemini, process))
        finally:
            kill9(process)
    assert process.returncode == -signal.SIGKILL
    # Committed, not reviewed: no v2 yet.
    ((feedback_id,),) = rows(db, "SELECT id FROM events WHERE type = 'function.feedback'")
    assert rows(db, "SELECT version FROM versions WHERE function_name = 'fetch_rate'") == [("v1",)]

    process, address = start_server(db)
    try:
        answer = asyncio.run(after_restart(address, db, feedback_id, retry_first=retry_first))
    finally:
        kill9(process)
    assert answer.status == pb.requires_update
    assert (answer.feedback_id, answer.new_version) == (feedback_id, "v2")
    assert "average rating 1.0" in answer.update_reason
