"""The server on PostgreSQL: a representative part of the integration suite (the
whole suite runs there with POET_TEST_DB=postgresql), and two servers sharing one
database, as replicas do, writing at once."""

from __future__ import annotations

import asyncio

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
async def replicas(settings):
    """Two servers on the same database; a stub for each."""
    from poet_grpc.api.server import create_server

    servers, channels = [], []
    try:
        for _ in range(2):
            server, port = await create_server(settings)
            servers.append(server)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield [poet_service_pb2_grpc.PoetServiceStub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(grace=1)


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
