"""The validation table, rule by rule (the integration tests cover it through the server)."""

import pytest

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb
from poet_grpc.config import Settings
from poet_grpc.api.interceptors.validation import RULES, violations

SETTINGS = Settings(max_code_bytes=100, max_publish_batch=3, max_event_bytes=200)


def fields(request):
    return {v.field for v in violations(request, SETTINGS)}


def test_every_request_type_has_rules_except_list_domains():
    request_types = {m for name, m in vars(pb).items() if name.endswith("Request") and isinstance(m, type)}
    assert request_types - set(RULES) == {pb.ListDomainsRequest}


@pytest.mark.parametrize(
    "request_, expected",
    [
        (pb.EnhanceRequest(function_name="f", original_code="def f(): pass"), set()),
        (pb.EnhanceRequest(), {"function_name", "original_code"}),
        (pb.EnhanceRequest(function_name="1abc", original_code="x" * 101), {"function_name", "original_code"}),
        (pb.EnhanceRequest(function_name="f", original_code="x", request_id="r" * 129), {"request_id"}),
        (pb.EnhanceTranspiledRequest(function_name="f", python_code="x"), {"transpilation_id"}),
        (pb.EnhanceExternalRequest(function_code="x", function_name="bad name"), {"function_name"}),
        (pb.SubmitFeedbackRequest(function_name="f", version="1", feedback_type=pb.user), {"version"}),
        (pb.SubmitFeedbackRequest(function_name="f", version="v1", feedback_type=pb.user, rating=0), {"rating"}),
        (pb.GetVersionRequest(function_name="f", version="current"), set()),
        (pb.GetVersionRequest(function_name="f", version="v0"), {"version"}),
        (pb.ListVersionsRequest(function_name="f", page_size=-1), {"page_size"}),
        (pb.ListEventsRequest(limit=-5), {"limit"}),
        (pb.StreamEventsRequest(after_position=-1), {"after_position"}),
    ],
)
def test_rules(request_, expected):
    assert fields(request_) == expected


def test_publish_batch_limits():
    too_many = pb.PublishEventsRequest(events=[events_pb2.Event(type="a.b")] * 4)
    assert fields(too_many) == {"events"}
    big = events_pb2.Event(type="a.b")
    big.payload.update({"blob": "x" * 500})
    assert fields(pb.PublishEventsRequest(events=[big])) == {"events[0]"}
    assert fields(pb.PublishEventsRequest(events=[events_pb2.Event(type="drift.detected", id="e1")])) == set()


def test_dead_letter_ids_must_be_ascii_digits():
    """"²".isdigit() is True but int("²") fails: such an id must be a 400, not a 500."""
    assert fields(pb.ReplayDeadLettersRequest(sink="s", ids=["²"])) == {"ids[0]"}
    assert fields(pb.ReplayDeadLettersRequest(sink="s", ids=["42"])) == set()


def _enhance(module: str = "", name: str = "f") -> pb.EnhanceRequest:
    from poet_grpc._gen.poet.v1 import resources_pb2

    return pb.EnhanceRequest(function_name=name, original_code="x",
                             context=resources_pb2.EnhancementContext(module=module))


@pytest.mark.parametrize("module", ["", "m", "mypkg.text", "paquete.módulo", "_a._b", "a" * 200, "match.type"])
def test_context_module_may_be_dotted_identifiers(module):
    assert fields(_enhance(module)) == set()


@pytest.mark.parametrize("module", ["a..b", "1x", "a-b", "a" * 201, "a.b ", " a", ".a", "a.", "a.class", "ﬁle", "a/b"])
def test_context_module_refusals_name_the_field(module):
    assert fields(_enhance(module)) == {"context.module"}


def test_enhance_function_name_stays_bare_and_says_where_the_module_goes():
    (violation,) = violations(_enhance(name="mypkg.text.f"), SETTINGS)
    assert violation.field == "function_name" and "context.module" in violation.description
    transpiled = pb.EnhanceTranspiledRequest(transpilation_id="t", function_name="a.f", python_code="x")
    (violation,) = violations(transpiled, SETTINGS)
    assert violation.field == "function_name" and "context.module" not in violation.description


@pytest.mark.parametrize("name", ["f", "mypkg.text.f", "paquete.módulo.f", ("m" * 200) + ".f"])
def test_addressing_rpcs_take_bare_or_qualified_names(name):
    assert fields(pb.ListVersionsRequest(function_name=name)) == set()
    assert fields(pb.GetVersionRequest(function_name=name, version="v1")) == set()
    assert fields(pb.ListEventsRequest(function_name=name)) == set()
    published = pb.PublishEventsRequest(events=[events_pb2.Event(type="a.b", function_name=name)])
    assert {v.field for v in violations(published, Settings())} == set()


@pytest.mark.parametrize("name", ["a..f", ".f", "a.", "a.fé", "1a.f", "a.class.f", ("m" * 201) + ".f", "a." + "f" * 129])
def test_qualified_names_with_bad_parts_are_refused(name):
    assert fields(pb.ListVersionsRequest(function_name=name)) == {"function_name"}
    assert fields(pb.StreamEventsRequest(function_name=name)) == {"function_name"}
    published = pb.PublishEventsRequest(events=[events_pb2.Event(type="a.b", function_name=name)])
    assert {v.field for v in violations(published, Settings())} == {"events[0].function_name"}
