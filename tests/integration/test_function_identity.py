"""A function's identity is its module plus its name (context.module), and
concurrent Enhance calls for one function queue or are refused with ABORTED and
RetryInfo, against a real server and SQLite file."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, resources_pb2
from poet_grpc.core import enhancement
from support import details, violated_fields

ALPHA = '''
def first(items: list, default=None):
    """The first item, or default when there is none."""
    return items[0] if items else default
'''
BETA = '''
def first(text: str) -> str:
    """The first word of a text."""
    return text.split()[0] if text.split() else ""
'''


def enhance_request(code: str, module: str = "", name: str = "first", **fields) -> pb.EnhanceRequest:
    return pb.EnhanceRequest(function_name=name, original_code=code,
                             context=resources_pb2.EnhancementContext(module=module), **fields)


async def log_head(stub) -> int:
    response = await stub.ListEvents(pb.ListEventsRequest(page_size=1000))
    return response.events[-1].position if response.events else 0


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


async def test_equal_names_from_two_modules_get_separate_histories_addressed_by_qualified_names(stub):
    alpha = await stub.Enhance(enhance_request(ALPHA, "alpha.seq"))
    beta = await stub.Enhance(enhance_request(BETA, "beta.text"))
    assert (alpha.function_name, alpha.version) == ("alpha.seq.first", "v1")
    assert (beta.function_name, beta.version) == ("beta.text.first", "v1")
    for identity, code in (("alpha.seq.first", ALPHA), ("beta.text.first", BETA)):
        listing = await stub.ListVersions(pb.ListVersionsRequest(function_name=identity))
        assert [(v.function_name, v.version) for v in listing.versions] == [(identity, "v1")]
        got = (await stub.GetVersion(pb.GetVersionRequest(function_name=identity, version="current"))).version
        assert got.function_name == identity and got.original_code == code
        (completed,) = (await stub.ListEvents(pb.ListEventsRequest(function_name=identity))).events
        assert completed.type == "enhancement.completed" and completed.function_name == identity
        assert completed.payload["function_name"] == identity
        assert completed.payload["module"] == identity.rpartition(".")[0]
    # The bare name is a third function: none yet, then one of its own.
    missing = await refused(stub.ListVersions(pb.ListVersionsRequest(function_name="first")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    bare = await stub.Enhance(enhance_request(ALPHA))
    assert (bare.function_name, bare.version) == ("first", "v1")
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="first"))
    assert [(v.function_name, v.version) for v in listing.versions] == [("first", "v1")]
    # The same content again is the stored version of each identity.
    assert (await stub.Enhance(enhance_request(ALPHA, "alpha.seq"))).version == "v1"
    assert (await stub.Enhance(enhance_request(ALPHA))).version == "v1"


async def test_every_addressing_rpc_takes_the_qualified_name(stub):
    identity = "alpha.seq.first"
    await stub.Enhance(enhance_request(ALPHA, "alpha.seq"))
    await stub.Enhance(enhance_request(ALPHA, "alpha.seq", optimize_for="performance"))
    await stub.Enhance(enhance_request(ALPHA))  # the bare `first` must stay untouched
    feedback = await stub.SubmitFeedback(pb.SubmitFeedbackRequest(
        function_name=identity, version="v1", feedback_type=pb.user, rating=5))
    assert feedback.status == pb.accepted
    deprecated = await stub.DeprecateVersion(pb.DeprecateVersionRequest(function_name=identity, version="v1"))
    assert deprecated.version.function_name == identity and deprecated.version.status == resources_pb2.deprecated
    activated = await stub.ActivateVersion(pb.ActivateVersionRequest(function_name=identity, version="v1"))
    assert activated.previous_version == "v2" and activated.version.current
    got = (await stub.GetVersion(pb.GetVersionRequest(function_name=identity, version="v1"))).version
    assert got.metrics.feedback_count == 1 and got.metrics.avg_rating == 5
    types = [e.type for e in (await stub.ListEvents(pb.ListEventsRequest(function_name=identity))).events]
    assert types == ["enhancement.completed", "enhancement.completed", "function.feedback",
                     "version.deprecated", "version.activated"]
    published = struct_pb2.Struct()
    published.update({"drift_score": 0.2})
    await stub.PublishEvents(pb.PublishEventsRequest(events=[
        events_pb2.Event(type="drift.detected", function_name=identity, payload=published)]))
    streamed = []
    async for item in stub.StreamEvents(pb.StreamEventsRequest(function_name=identity, event_type="drift.detected")):
        if item.WhichOneof("item") == "checkpoint":
            break
        streamed.append(item.event)
    assert [(e.type, e.function_name) for e in streamed] == [("drift.detected", identity)]
    bare = await stub.ListVersions(pb.ListVersionsRequest(function_name="first"))
    assert [(v.version, v.metrics.feedback_count, v.status) for v in bare.versions] == [("v1", 0, resources_pb2.active)]


async def test_the_learning_loop_regenerates_with_the_same_module(server, stub, monkeypatch):
    identity = "alpha.seq.first"
    await stub.Enhance(enhance_request(ALPHA, "alpha.seq"))
    service = server.core.enhancements
    modules = []
    generate = service._generate

    def recording(spec, **kwargs):
        modules.append((spec.module, spec.function_name))
        return generate(spec, **kwargs)

    monkeypatch.setattr(service, "_generate", recording)
    answers = [
        await stub.SubmitFeedback(pb.SubmitFeedbackRequest(function_name=identity, version="v1", feedback_type=pb.user,
                                                           rating=1))
        for _ in range(3)
    ]
    assert answers[-1].status == pb.requires_update and answers[-1].new_version == "v2"
    assert modules == [("alpha.seq", "first")]
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name=identity))
    assert [(v.function_name, v.version, v.update_reason != "") for v in listing.versions] == [
        (identity, "v1", False), (identity, "v2", True)]
    update = (await stub.ListEvents(pb.ListEventsRequest(function_name=identity, event_type="function.update"))).events
    assert [e.payload["new_version"] for e in update] == ["v2"]
    missing = await refused(stub.ListVersions(pb.ListVersionsRequest(function_name="first")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_a_non_ascii_module_is_an_identity_too(stub):
    response = await stub.Enhance(enhance_request(ALPHA, "paquete.módulo"))
    assert (response.function_name, response.version) == ("paquete.módulo.first", "v1")
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="paquete.módulo.first"))
    assert [v.version for v in listing.versions] == ["v1"]


BAD_MODULES = ["a..b", "1x", "a-b", "a" * 201, "a.b ", ".a", "a.", "mypkg.class", "ﬁle"]


@pytest.mark.parametrize("module", BAD_MODULES, ids=lambda m: repr(m[:12]))
async def test_bad_modules_are_invalid_argument_naming_context_module_and_store_nothing(stub, module):
    error = await refused(stub.Enhance(enhance_request(ALPHA, module)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"context.module"}
    assert details(error)["ErrorInfo"].domain == "poet.v1"
    assert await log_head(stub) == 0


async def test_a_module_of_200_characters_is_accepted(stub):
    module = ".".join(["m" * 39] * 5)  # 5 * 39 + 4 dots = 199
    module += "x"
    assert len(module) == 200
    assert (await stub.Enhance(enhance_request(ALPHA, module))).function_name == f"{module}.first"


async def test_a_dotted_function_name_in_enhance_points_at_context_module(stub):
    error = await refused(stub.Enhance(enhance_request(ALPHA, name="alpha.seq.first")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(error)["BadRequest"].field_violations
    assert violation.field == "function_name" and "context.module" in violation.description


BAD_NAMES = ["alpha..first", "alpha.seq.", ".first", "1alpha.first", "alpha-seq.first", "alpha.seq.fïrst",
             "alpha.class.first", "a" * 201 + ".first", "alpha seq.first"]
ADDRESSING = {
    "ListVersions": lambda stub, name: stub.ListVersions(pb.ListVersionsRequest(function_name=name)),
    "GetVersion": lambda stub, name: stub.GetVersion(pb.GetVersionRequest(function_name=name, version="v1")),
    "ActivateVersion": lambda stub, name: stub.ActivateVersion(pb.ActivateVersionRequest(function_name=name, version="v1")),
    "DeprecateVersion": lambda stub, name: stub.DeprecateVersion(
        pb.DeprecateVersionRequest(function_name=name, version="v1")),
    "SubmitFeedback": lambda stub, name: stub.SubmitFeedback(pb.SubmitFeedbackRequest(
        function_name=name, version="v1", feedback_type=pb.user, rating=3)),
    "ListEvents": lambda stub, name: stub.ListEvents(pb.ListEventsRequest(function_name=name)),
}


@pytest.mark.parametrize("rpc", ADDRESSING)
@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:16]))
async def test_qualified_names_with_bad_parts_are_invalid_argument(stub, rpc, name):
    error = await refused(ADDRESSING[rpc](stub, name))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"function_name"}


@pytest.mark.parametrize("name", BAD_NAMES[:3])
async def test_streams_and_published_events_refuse_bad_qualified_names(stub, name):
    stream = stub.StreamEvents(pb.StreamEventsRequest(function_name=name))
    error = await refused(stream.read())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == {"function_name"}
    error = await refused(stub.PublishEvents(pb.PublishEventsRequest(events=[
        events_pb2.Event(type="drift.detected", function_name=name)])))
    assert violated_fields(error) == {"events[0].function_name"}
    assert await log_head(stub) == 0


# -- concurrent Enhance calls for one function --------------------------------


def variant(i: int) -> str:
    return ALPHA + f"\n# revision {i}\n"


def assert_aborted_with_retry_info(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.ABORTED, error
    found = details(error)
    assert found["ErrorInfo"].reason == "CONCURRENT_ENHANCEMENT"
    delay = found["RetryInfo"].retry_delay.ToMilliseconds()
    assert 100 <= delay <= 1000
    assert ("retry-after", "1") in tuple(error.trailing_metadata())


async def check_numbering(stub, identity: str, stored: int) -> None:
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name=identity, page_size=100))
    assert [v.version for v in listing.versions] == [f"v{n}" for n in range(1, stored + 1)]
    assert listing.current_version == f"v{stored}"


@pytest.mark.parametrize("module", ["", "alpha.seq"])
async def test_concurrent_enhancements_of_one_function_queue_and_number_versions_without_gaps(stub, module):
    results = await asyncio.gather(
        *(stub.Enhance(enhance_request(variant(i), module)) for i in range(8)), return_exceptions=True
    )
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    for failure in (r for r in results if isinstance(r, BaseException)):
        assert isinstance(failure, grpc.aio.AioRpcError), failure
        assert_aborted_with_retry_info(failure)
    assert len(succeeded) == 8, "one process queues them: none races"
    assert sorted(int(r.version[1:]) for r in succeeded) == list(range(1, 9))
    await check_numbering(stub, f"{module}.first" if module else "first", 8)


async def test_a_full_queue_is_aborted_with_retry_info_and_the_rest_succeed(stub, monkeypatch):
    monkeypatch.setattr(enhancement, "MAX_QUEUED_PER_FUNCTION", 2)
    results = await asyncio.gather(
        *(stub.Enhance(enhance_request(variant(i), "alpha.seq")) for i in range(8)), return_exceptions=True
    )
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    aborted = [r for r in results if isinstance(r, BaseException)]
    assert aborted and succeeded
    for failure in aborted:
        assert isinstance(failure, grpc.aio.AioRpcError), failure
        assert_aborted_with_retry_info(failure)
    await check_numbering(stub, "alpha.seq.first", len(succeeded))
    # A retry after the suggested delay goes through.
    delay = details(aborted[0])["RetryInfo"].retry_delay.ToMilliseconds() / 1000
    await asyncio.sleep(delay)
    retried = await stub.Enhance(enhance_request(variant(100), "alpha.seq"))
    assert retried.version == f"v{len(succeeded) + 1}"


async def test_losing_the_version_number_to_another_process_is_aborted_and_stores_nothing(server, stub, monkeypatch):
    # As if another replica stored each number first: every attempt loses.
    monkeypatch.setattr(server.core.enhancements, "_store_version", lambda *args, **kwargs: None)
    error = await refused(stub.Enhance(enhance_request(ALPHA, "alpha.seq")))
    assert_aborted_with_retry_info(error)
    assert details(error)["ErrorInfo"].metadata["function_name"] == "alpha.seq.first"
    assert await log_head(stub) == 0
