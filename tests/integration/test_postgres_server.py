"""The server on PostgreSQL: a representative part of the integration suite (the
whole suite runs there with POET_TEST_DB=postgresql), and two servers sharing one
database, as replicas do, writing at once."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import pytest_asyncio

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc
from poet_grpc.config import Settings

# Run here with the PostgreSQL `settings` below (imported tests use this module's fixtures).
from test_enhance import (  # noqa: F401
    test_concurrent_identical_requests_store_one_version,
    test_request_id_replay_writes_nothing_and_reuse_with_other_content_conflicts,
    test_same_content_returns_the_stored_version_and_new_content_makes_v2,
)
from test_events import (  # noqa: F401
    test_list_events_filters_by_function_type_time_and_correlation,
    test_list_events_pages_and_limit_alias,
    test_publish_is_idempotent_by_event_id,
    test_stream_has_no_gaps_or_reordering_under_concurrent_publishers,
    test_stream_resumes_after_reconnect_without_loss,
)
from test_learning import (  # noqa: F401
    test_concurrent_feedback_produces_one_new_version,
    test_false_positive_drift_alerts_lead_to_a_less_sensitive_version_announced_on_the_stream,
    test_rollback_and_deprecate,
)
from test_versions_and_feedback import (  # noqa: F401
    test_feedback_request_id_records_once,
    test_list_versions_pages_with_opaque_tokens,
)

PRICE = "def {name}(items, rate):\n    return sum(items) * (1 + rate) + {n}\n"


@pytest.fixture
def settings(postgres_url, request) -> Settings:
    marker = request.node.get_closest_marker("checkpoint_seconds")
    return Settings(grpc_listen="127.0.0.1:0", gateway=False, db=postgres_url,
                    checkpoint_seconds=marker.args[0] if marker else 30.0)


@pytest_asyncio.fixture
async def replica_servers(settings):
    """Two servers on the same database: (server, stub) of each."""
    from poet_grpc.api.server import create_server

    servers, channels = [], []
    try:
        for _ in range(2):
            server, port = await create_server(settings)
            servers.append(server)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield [(server, poet_service_pb2_grpc.PoetServiceStub(channel)) for server, channel in zip(servers, channels)]
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(grace=1)


@pytest.fixture
def replicas(replica_servers):
    """A stub for each of two servers on the same database."""
    return [stub for _, stub in replica_servers]


async def _enhance_retrying(stub, request: pb.EnhanceRequest) -> pb.EnhanceResponse:
    # Replicas do not queue one function's enhancements behind each other (one
    # replica does): a caller whose number another replica took is told to retry.
    for _ in range(20):
        try:
            return await stub.Enhance(request)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ABORTED:
                raise
    raise AssertionError("still ABORTED after 20 tries")


async def test_replicas_number_versions_of_one_function_once_each(replicas):
    requests = [pb.EnhanceRequest(function_name="price", original_code=PRICE.format(name="price", n=n))
                for n in range(6)]
    answers = await asyncio.gather(*(_enhance_retrying(replicas[n % 2], r) for n, r in enumerate(requests)))
    assert sorted(a.version for a in answers) == [f"v{n}" for n in range(1, 7)]
    for stub in replicas:
        listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="price"))
        assert [v.version for v in listing.versions] == [f"v{n}" for n in range(1, 7)]


async def test_replicas_replay_one_request_id_and_dedup_event_ids(replicas):
    request = pb.EnhanceRequest(function_name="price", original_code=PRICE.format(name="price", n=1),
                                request_id="one-request")
    answers = await asyncio.gather(*(_enhance_retrying(replicas[n % 2], request) for n in range(6)))
    assert {a.version for a in answers} == {"v1"}

    def batch(n: int) -> pb.PublishEventsRequest:
        return pb.PublishEventsRequest(events=[events_pb2.Event(id=f"shared-{i}", type="external.tick")
                                               for i in range(n, n + 20)])

    results = await asyncio.gather(*(replicas[n % 2].PublishEvents(batch(n * 5)) for n in range(8)))
    firsts = [r.id for response in results for r in response.results if not r.duplicate]
    listing = await replicas[0].ListEvents(pb.ListEventsRequest(event_type="external.tick", page_size=1000))
    logged = [e.id for e in listing.events]
    assert sorted(firsts) == sorted(logged) and len(set(logged)) == len(logged) == 55
    assert [e.position for e in listing.events] == sorted(e.position for e in listing.events)


async def test_a_replica_streams_what_another_appends_at_once(replicas):
    # Checkpoints (and the idle look at the store) only every 30 s: what arrives
    # sooner was woken by the other replica's commit (LISTEN/NOTIFY).
    writer, reader = replicas
    await writer.PublishEvents(pb.PublishEventsRequest(events=[events_pb2.Event(type="warm.up")]))
    stream = reader.StreamEvents(pb.StreamEventsRequest(live_only=True))
    first = await asyncio.wait_for(stream.read(), 10)
    assert first.WhichOneof("item") == "checkpoint"
    received = []
    for round_ in range(5):
        sent = [events_pb2.Event(id=f"live-{round_}-{i}", type="live.tick") for i in range(1 + round_ * 7)]
        started = time.monotonic()
        acked = await writer.PublishEvents(pb.PublishEventsRequest(events=sent))
        while len(received) < sum(1 + r * 7 for r in range(round_ + 1)):
            item = await asyncio.wait_for(stream.read(), 5)
            if item.WhichOneof("item") == "event":
                received.append((item.event.position, item.event.id))
        assert time.monotonic() - started < 5
        assert received[-len(sent):] == [(r.position, r.id) for r in acked.results]
    stream.cancel()
    positions = [p for p, _ in received]
    assert positions == list(range(positions[0], positions[0] + len(positions)))


async def test_each_consumer_runs_on_one_replica_and_moves_when_it_stops(replica_servers):
    def held(server) -> set[str]:
        gauge = server.core.metrics.consumer_leases
        return {labels[0] for labels, child in gauge._metrics.items() if child._value.get() == 1}

    (first, _), (second, _) = replica_servers
    deadline = time.monotonic() + 10
    while not ({"learning", "inbound"} <= held(first) | held(second)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert {"learning", "inbound"} <= held(first) | held(second)
    assert not held(first) & held(second)
    holder, other = (first, second) if "learning" in held(first) else (second, first)
    await holder.stop(grace=1)
    deadline = time.monotonic() + 10
    while "learning" not in held(other) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert "learning" in held(other)


async def test_feedback_on_every_replica_at_once_makes_one_new_version(replicas):
    from test_learning import FETCH

    await _enhance_retrying(replicas[0], pb.EnhanceRequest(function_name="fetch_rate", original_code=FETCH))
    answers = await asyncio.gather(*(
        replicas[n % 2].SubmitFeedback(pb.SubmitFeedbackRequest(function_name="fetch_rate", version="v1",
                                                                  feedback_type=pb.user, rating=1))
        for n in range(12)
    ), return_exceptions=True)
    # A replica that lost the race to the other's regeneration says so (ABORTED, retry)
    # or answers that the version was already replaced; never a second new version.
    succeeded = [a for a in answers if not isinstance(a, Exception)]
    assert all(isinstance(a, grpc.aio.AioRpcError) and a.code() == grpc.StatusCode.ABORTED
               for a in answers if isinstance(a, Exception)), answers
    assert sum(a.status == pb.requires_update for a in succeeded) == 1
    for stub in replicas:
        versions = (await stub.ListVersions(pb.ListVersionsRequest(function_name="fetch_rate"))).versions
        assert [v.version for v in versions] == ["v1", "v2"]
        updates = (await stub.ListEvents(pb.ListEventsRequest(event_type="function.update"))).events
        assert len(updates) == 1 and updates[0].payload["new_version"] == "v2"
