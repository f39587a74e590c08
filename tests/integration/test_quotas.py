"""Quotas per caller through the public API: functions created, versions per
function, bytes of code. Refused calls store nothing; the limit holds under
concurrency and across restarts; the learning loop is not charged to clients."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.api.server import create_server
from support import details
from postgres_support import sqlite_only

ALICE = (("x-client-id", "alice"),)
BOB = (("x-client-id", "bob"),)


def code(name: str = "scale", variant: int = 0) -> str:
    return f"def {name}(x: float) -> float:\n    return x * {variant + 2}\n"


@contextlib.asynccontextmanager
async def serving(settings, **overrides):
    server, port = await create_server(dataclasses.replace(settings, **overrides))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield poet_service_pb2_grpc.PoetServiceStub(channel)
    finally:
        await server.stop(grace=1)


async def enhance(stub, name: str = "scale", variant: int = 0, metadata=ALICE, **fields):
    return await stub.Enhance(pb.EnhanceRequest(function_name=name, original_code=code(name, variant), **fields),
                              metadata=metadata)


def quota_failure(error: grpc.aio.AioRpcError) -> error_details_pb2.QuotaFailure:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            return failure
    raise AssertionError("no QuotaFailure detail")


def refused(error: grpc.aio.AioRpcError, *quota: str) -> list[str]:
    """The violations' descriptions, after checking the error's shape."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert details(error)["ErrorInfo"].reason == "QUOTA_EXCEEDED"
    violations = quota_failure(error).violations
    assert [v.subject for v in violations] == ["id:alice"] * len(violations)
    described = [v.description for v in violations]
    assert [d.split(":")[0] for d in described] == list(quota)
    return described


def snapshot(db) -> dict[str, list]:
    """Every row of every table (but consumer positions, which advance on their own)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'consumers'")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


@sqlite_only
async def test_versions_per_function_quota_refuses_with_quota_failure_and_stores_nothing(settings):
    async with serving(settings, quota_versions_per_function=2) as stub:
        first = await enhance(stub, variant=0, request_id="enh-1")
        await enhance(stub, variant=1)
        before = snapshot(settings.db)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await enhance(stub, variant=2, request_id="enh-3")
        assert refused(failure.value, "versions of scale") == ["versions of scale: 2 of 2"]
        assert snapshot(settings.db) == before
        # At quota, what is already stored is still answered: a retried request_id, the same content.
        assert await enhance(stub, variant=0, request_id="enh-1") == first
        assert (await enhance(stub, variant=1)).version == "v2"
        # The refused request_id was not recorded: with room it would go through.
        assert snapshot(settings.db) == before
        # Quotas are per caller: bob has his own.
        assert (await enhance(stub, variant=2, metadata=BOB)).version == "v3"


async def test_concurrent_enhancements_never_overshoot_the_quota(settings):
    async with serving(settings, quota_versions_per_function=3) as stub:
        outcomes = await asyncio.gather(*(enhance(stub, variant=i) for i in range(8)), return_exceptions=True)
        stored = [o for o in outcomes if isinstance(o, pb.EnhanceResponse)]
        refusals = [o for o in outcomes if not isinstance(o, pb.EnhanceResponse)]
        assert sorted(o.version for o in stored) == ["v1", "v2", "v3"]
        assert len(refusals) == 5
        for error in refusals:
            refused(error, "versions of scale")
        listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="scale"))
        assert [v.version for v in listing.versions] == ["v1", "v2", "v3"]


async def test_functions_quota_holds_under_concurrency_and_across_a_restart(settings):
    async with serving(settings, quota_functions=3) as stub:
        names = [f"f{i}" for i in range(8)]
        outcomes = await asyncio.gather(*(enhance(stub, name) for name in names), return_exceptions=True)
        created = sorted(o.function_name for o in outcomes if isinstance(o, pb.EnhanceResponse))
        assert len(created) == 3
        for error in (o for o in outcomes if not isinstance(o, pb.EnhanceResponse)):
            assert refused(error, "functions created") == ["functions created: 3 of 3"]
        # A new version of a function it created is not a new function.
        assert (await enhance(stub, created[0], variant=1)).version == "v2"
    # Usage is stored with the versions: a restart does not reset it.
    async with serving(settings, quota_functions=3) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await enhance(stub, "another")
        refused(failure.value, "functions created")
        assert (await enhance(stub, "another", metadata=BOB)).version == "v1"


@sqlite_only
async def test_bytes_quota_counts_the_generated_code_too(settings):
    # The source (~50 bytes) fits; with the code generated from it, a version does not.
    async with serving(settings, quota_bytes=1000) as stub:
        before = snapshot(settings.db)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await enhance(stub)
        (description,) = refused(failure.value, "bytes of code stored")
        assert description.startswith("bytes of code stored: 0 of 1000; this version needs ")
        assert snapshot(settings.db) == before
        # A source over the quota on its own is refused before anything is generated.
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Enhance(pb.EnhanceRequest(function_name="big", original_code=code("big") + "#" * 2000 + "\n"),
                               metadata=ALICE)
        refused(failure.value, "bytes of code stored")
    async with serving(settings, quota_bytes=0) as stub:  # 0: unlimited
        assert (await enhance(stub)).version == "v1"


async def test_the_learning_loops_versions_are_not_charged_to_the_caller(settings):
    async with serving(settings, quota_versions_per_function=2, policy_min_ratings=1) as stub:
        await enhance(stub)

        async def rate_badly(version: str) -> pb.SubmitFeedbackResponse:
            return await stub.SubmitFeedback(pb.SubmitFeedbackRequest(
                function_name="scale", version=version, feedback_type=pb.user, rating=1), metadata=ALICE)

        assert (await rate_badly("v1")).new_version == "v2"
        assert (await rate_badly("v2")).new_version == "v3"
        # The loop's own count is at the limit: the evidence is kept, no version made.
        third = await rate_badly("v3")
        assert third.status == pb.accepted and not third.new_version
        # alice stored one version of her own, so one more fits.
        assert (await enhance(stub, variant=1)).version == "v4"
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await enhance(stub, variant=2)
        refused(failure.value, "versions of scale")
