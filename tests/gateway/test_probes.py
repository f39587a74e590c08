"""ProbeServicer's readiness checks on their own (the REST side is in test_rest_service.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from poet_grpc._gen.poet.v1 import probes_pb2
from poet_grpc.config import Settings
from poet_grpc.api.probes import HTTP_STATUS_HEADER, ProbeServicer, resident_memory_bytes


class FakeDb:
    def __init__(self, *, fail: bool = False, delay: float = 0.0):
        self.fail, self.delay = fail, delay

    async def call(self, fn):
        await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError("disk gone")
        return fn(SimpleNamespace(last_position=lambda: 7))


class FakeContext:
    def __init__(self) -> None:
        self.initial_metadata = None

    async def send_initial_metadata(self, metadata) -> None:
        self.initial_metadata = tuple(metadata)


def _servicer(*, db=None, breaker: str | None = None, sandbox_closed: bool = False, **settings) -> ProbeServicer:
    llm = SimpleNamespace(breaker_state=breaker) if breaker else None
    sandbox = SimpleNamespace(closed=sandbox_closed, isolation="namespaces")
    core = SimpleNamespace(db=db or FakeDb(), enhancements=SimpleNamespace(llm=llm), sandbox=sandbox)
    return ProbeServicer(core, Settings(**settings))


async def _ready(servicer: ProbeServicer) -> tuple[probes_pb2.GetReadinessResponse, FakeContext]:
    context = FakeContext()
    return await servicer.GetReadiness(probes_pb2.GetReadinessRequest(), context), context


async def test_ready_when_every_check_passes() -> None:
    answer, context = await _ready(_servicer())
    assert answer.status == probes_pb2.ready
    checks = answer.checks
    assert (checks.llm_client, checks.storage, checks.memory, checks.sandbox) == (True, True, True, True)
    assert answer.isolation == "namespaces"
    assert context.initial_metadata is None


@pytest.mark.parametrize(
    ("servicer_args", "failed"),
    [
        ({"db": FakeDb(fail=True)}, "storage"),
        ({"db": FakeDb(delay=2)}, "storage"),  # slower than the probe's limit
        ({"readiness_max_rss_bytes": 1}, "memory"),
        ({"gemini_api_key": "k", "breaker": "open"}, "llm_client"),
        ({"gemini_api_key": "k"}, "llm_client"),  # a key but no client
        ({"sandbox_closed": True}, "sandbox"),
    ],
)
async def test_a_failed_check_is_not_ready_with_http_503(servicer_args, failed: str) -> None:
    answer, context = await _ready(_servicer(**servicer_args))
    assert answer.status == probes_pb2.not_ready
    checks = {"llm_client": answer.checks.llm_client, "storage": answer.checks.storage,
              "memory": answer.checks.memory, "sandbox": answer.checks.sandbox}
    assert [name for name, ok in checks.items() if not ok] == [failed]
    assert context.initial_metadata == ((HTTP_STATUS_HEADER, "503"),)


@pytest.mark.parametrize("state", ["closed", "half_open"])
async def test_gemini_counts_unless_its_breaker_is_open(state: str) -> None:
    answer, _ = await _ready(_servicer(gemini_api_key="k", breaker=state))
    assert answer.status == probes_pb2.ready


async def test_memory_check_off_and_shutdown() -> None:
    servicer = _servicer(readiness_max_rss_bytes=0)
    assert (await _ready(servicer))[0].status == probes_pb2.ready
    servicer.begin_shutdown()
    answer, context = await _ready(servicer)
    assert servicer.shutting_down and answer.status == probes_pb2.not_ready
    assert answer.checks.storage and context.initial_metadata == ((HTTP_STATUS_HEADER, "503"),)
    live = await servicer.GetLiveness(probes_pb2.GetLivenessRequest(), FakeContext())
    assert live.status == probes_pb2.alive


def test_resident_memory_is_measured() -> None:
    rss = resident_memory_bytes()
    assert rss is not None and 10 * 1024**2 < rss < 64 * 1024**3
