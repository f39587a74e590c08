"""scripts/openapi.py: the OpenAPI document generated from the proto contract."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, json_format
from google.rpc import status_pb2
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from poet_grpc.api.gateway import openapi_path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("poet_openapi_script", ROOT / "scripts" / "openapi.py")
openapi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(openapi)

SAMPLE = textwrap.dedent(
    """
    syntax = "proto3";
    package poet.test;
    import "google/api/annotations.proto";
    import "google/api/field_behavior.proto";
    import "google/protobuf/struct.proto";
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/duration.proto";
    import "google/protobuf/wrappers.proto";

    // Things, for tests.
    service ThingService {
      // Gets a thing. More words.
      rpc GetThing(GetThingRequest) returns (Thing) {
        option (google.api.http) = {
          get: "/v1/shelves/{shelf}/things/{name=*}"
          additional_bindings {get: "/v1/things/{name}"}
        };
      }
      // Creates a thing.
      rpc CreateThing(CreateThingRequest) returns (Thing) {
        option (google.api.http) = {post: "/v1/shelves/{shelf}/things" body: "thing"};
      }
      // Renames a thing.
      rpc RenameThing(RenameThingRequest) returns (Thing) {
        option (google.api.http) = {post: "/v1/things/{name}:rename" body: "*"};
      }
      // Watches things.
      rpc WatchThings(GetThingRequest) returns (stream Thing) {
        option (google.api.http) = {get: "/v1/things:watch"};
      }
      // Not on REST.
      rpc Hidden(GetThingRequest) returns (Thing);
    }

    // How a thing is kept.
    enum Mode {
      // Unknown.
      MODE_UNSPECIFIED = 0;
      // On a shelf.
      shelved = 1;
    }

    message Filter {
      // Only after this time.
      google.protobuf.Timestamp since = 1;
      int64 min_size = 2;
      Inner inner = 3;
      google.protobuf.Struct labels = 4;
    }
    message Inner { bool deep = 1; }

    message GetThingRequest {
      string shelf = 1;
      // The thing's name.
      string name = 2 [(google.api.field_behavior) = REQUIRED];
      Filter filter = 3;
      repeated string tags = 4;
      Mode mode = 5;
    }
    message CreateThingRequest {
      string shelf = 1;
      Thing thing = 2 [(google.api.field_behavior) = REQUIRED];
      bool validate_only = 3;
    }
    message RenameThingRequest {
      string name = 1 [(google.api.field_behavior) = REQUIRED];
      string new_name = 2 [(google.api.field_behavior) = REQUIRED];
    }

    // A thing.
    message Thing {
      // The name.
      string name = 1 [(google.api.field_behavior) = REQUIRED];
      int64 size = 2 [(google.api.field_behavior) = OUTPUT_ONLY];
      uint64 big = 3;
      int32 small = 4;
      uint32 count = 5;
      double ratio = 6;
      float weight = 7;
      bool ok = 8;
      bytes blob = 9;
      Mode mode = 10;
      google.protobuf.Timestamp created = 11;
      google.protobuf.Duration ttl = 12;
      google.protobuf.Struct attributes = 13;
      google.protobuf.Value anything = 14;
      google.protobuf.Int64Value maybe = 15;
      map<string, int64> counts = 16;
      repeated Thing children = 17;
      oneof where {
        string shelf = 18;
        string box = 19;
      }
      optional double score = 20;
    }
    """
)


@pytest.fixture(scope="module")
def sample_descriptors(tmp_path_factory) -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("proto")
    (root / "sample.proto").write_text(SAMPLE)
    out = root / "sample.pb"
    includes = [f"-I{d}" for d in [root, *openapi._include_dirs()[1:]]]
    assert protoc.main(["protoc", *includes, f"--descriptor_set_out={out}", "--include_imports",
                        "--include_source_info", "sample.proto", *openapi.EXTRA_PROTOS]) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def sample(sample_descriptors) -> dict:
    document = openapi.build(sample_descriptors)
    validate(document)
    return document


def _http_rule(fds: descriptor_pb2.FileDescriptorSet, method_name: str) -> annotations_pb2.HttpRule:
    file = next(f for f in fds.file if f.name == "sample.proto")
    method = next(m for m in file.service[0].method if m.name == method_name)
    return method.options.Extensions[annotations_pb2.http]


def _operation_ids(document: dict) -> dict[tuple[str, str], str]:
    return {(verb, path): op["operationId"] for path, methods in document["paths"].items()
            for verb, op in methods.items()}


def _schema(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def test_paths_verbs_and_bindings(sample: dict) -> None:
    assert set(sample["paths"]) == {
        "/v1/shelves/{shelf}/things/{name}", "/v1/things/{name}", "/v1/shelves/{shelf}/things",
        "/v1/things/{name}:rename", "/v1/things:watch",
    }
    primary = sample["paths"]["/v1/shelves/{shelf}/things/{name}"]["get"]
    assert primary["summary"] == "Gets a thing"
    assert primary["tags"] == ["ThingService"]
    assert sample["tags"] == [{"name": "ThingService", "description": "Things, for tests."}]


def test_operation_ids_are_the_rpc_name_scoped_by_the_route(sample: dict) -> None:
    assert _operation_ids(sample) == {
        ("get", "/v1/shelves/{shelf}/things/{name}"): "GetShelfThing",
        ("get", "/v1/things/{name}"): "GetThing",  # the additional binding
        ("post", "/v1/shelves/{shelf}/things"): "CreateShelfThing",
        ("post", "/v1/things/{name}:rename"): "RenameThing",
        ("get", "/v1/things:watch"): "WatchThings",
    }


@pytest.mark.parametrize("method, template, wanted", [
    ("ListEvents", "/api/v1/functions/{function_name}/events", "ListFunctionEvents"),
    ("ListEvents", "/api/v1/events", "ListEvents"),
    ("StreamEvents", "/api/v1/functions/{function_name}/events:stream", "StreamFunctionEvents"),
    ("GetVersion", "/api/v1/functions/{function_name}/versions/{version}", "GetFunctionVersion"),
    ("ActivateVersion", "/api/v1/functions/{function_name}/versions/{version}:activate", "ActivateFunctionVersion"),
    ("ReplayDeadLetters", "/api/v1/dead-letters:replay", "ReplayDeadLetters"),
    ("ListLetters", "/v1/dead-letters/{box}/letters", "ListBoxLetters"),  # the variable names the parent
    ("ListParts", "/v1/dead-letters/{name}/parts", "ListDeadLetterParts"),  # a generic one: the collection
    ("GetBook", "/v1/{name=publishers/*/books/*}", "GetPublisherBook"),
    ("ListBooks", "/v1/{parent=libraries/*/categories/*}/books", "ListLibraryCategoryBooks"),
    ("ListShelves", "/v1/rooms/{room_id}/shelves", "ListRoomShelves"),
    ("ListShelfBooks", "/v1/shelves/{shelf}/books", "ListShelfBooks"),  # the scope already in the name
    ("Enhance", "/api/v1/functions/enhance", "Enhance"),
    ("GetLiveness", "/health/live", "GetLiveness"),
])
def test_operation_id(method: str, template: str, wanted: str) -> None:
    assert openapi._operation_id(method, template) == wanted


def test_operation_ids_do_not_depend_on_the_order_of_bindings(sample_descriptors) -> None:
    swapped = descriptor_pb2.FileDescriptorSet()
    swapped.CopyFrom(sample_descriptors)
    rule = _http_rule(swapped, "GetThing")
    primary, additional = rule.get, rule.additional_bindings[0].get
    rule.get, rule.additional_bindings[0].get = additional, primary
    assert _operation_ids(openapi.build(swapped)) == _operation_ids(openapi.build(sample_descriptors))


def test_two_bindings_with_one_operation_id_are_refused(sample_descriptors) -> None:
    clash = descriptor_pb2.FileDescriptorSet()
    clash.CopyFrom(sample_descriptors)
    _http_rule(clash, "WatchThings").additional_bindings.add(get="/v2/things:watch")
    with pytest.raises(ValueError, match="GET /v1/things:watch and GET /v2/things:watch would both be operationId WatchThings"):
        openapi.build(clash)


def test_get_fields_are_path_and_query_parameters(sample: dict) -> None:
    parameters = {p["name"]: p for p in sample["paths"]["/v1/shelves/{shelf}/things/{name}"]["get"]["parameters"]}
    assert parameters["shelf"]["in"] == parameters["name"]["in"] == "path"
    assert parameters["name"]["required"] is True and parameters["name"]["description"] == "The thing's name."
    query = {name for name, p in parameters.items() if p["in"] == "query"}
    # Nested messages as a.b; Struct cannot be a query parameter.
    assert query == {"filter.since", "filter.min_size", "filter.inner.deep", "tags", "mode"}
    assert parameters["filter.since"]["schema"] == {"type": "string", "format": "date-time"}
    assert parameters["filter.min_size"]["schema"]["type"] == "string"
    assert parameters["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert parameters["tags"]["explode"] is True
    assert parameters["mode"]["schema"]["enum"] == ["MODE_UNSPECIFIED", "shelved"]


def test_bodies(sample: dict) -> None:
    create = sample["paths"]["/v1/shelves/{shelf}/things"]["post"]
    assert create["requestBody"]["required"] is True
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/poet.test.Thing"}
    assert [p["name"] for p in create["parameters"]] == ["shelf", "validate_only"]
    rename = sample["paths"]["/v1/things/{name}:rename"]["post"]
    body = rename["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"new_name"}  # the path field is not in the body
    assert body["required"] == ["new_name"]
    assert "parameters" in rename and [p["name"] for p in rename["parameters"]] == ["name"]


def test_json_mapping_of_field_types(sample: dict) -> None:
    thing = _schema(sample, "poet.test.Thing")
    props = thing["properties"]
    assert thing["required"] == ["name"]
    assert thing["description"].startswith("A thing.") and "At most one of: shelf, box." in thing["description"]
    assert props["size"]["type"] == "string" and props["size"]["readOnly"] is True  # int64, OUTPUT_ONLY
    assert props["big"]["type"] == "string" and props["big"]["format"] == "uint64"
    assert props["small"] == {"type": "integer", "format": "int32", "minimum": -2**31, "maximum": 2**31 - 1}
    assert props["count"]["minimum"] == 0 and props["count"]["maximum"] == 2**32 - 1
    assert props["ratio"] == {"type": "number", "format": "double"}
    assert props["weight"]["format"] == "float"
    assert props["ok"] == {"type": "boolean"}
    assert props["blob"] == {"type": "string", "format": "byte"}
    assert props["mode"]["enum"] == ["MODE_UNSPECIFIED", "shelved"]
    assert "- `shelved`: On a shelf." in props["mode"]["description"]
    assert props["created"] == {"type": "string", "format": "date-time"}
    assert props["ttl"]["pattern"].endswith("s$")
    assert props["attributes"] == {"type": "object", "additionalProperties": True}
    assert "type" not in props["anything"]  # any JSON value
    assert props["maybe"]["type"] == "string"
    assert props["counts"] == {"type": "object", "additionalProperties": openapi._INT64_SCHEMA}
    assert props["children"] == {"type": "array", "items": {"$ref": "#/components/schemas/poet.test.Thing"}}
    assert props["score"] == {"type": "number", "format": "double"}


def test_streams_errors_and_unbound_methods(sample: dict) -> None:
    watch = sample["paths"]["/v1/things:watch"]["get"]["responses"]["200"]
    assert set(watch["content"]) == {"text/event-stream"}
    assert watch["content"]["text/event-stream"]["x-sse-data"] == {"$ref": "#/components/schemas/poet.test.Thing"}
    responses = sample["paths"]["/v1/things/{name}"]["get"]["responses"]
    assert responses["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/google.rpc.Status"}
    assert "Retry-After" in responses["429"]["headers"]
    assert "Hidden" not in json.dumps(sample["paths"])
    items = _schema(sample, "google.rpc.Status")["properties"]["details"]["items"]
    mapping = items["discriminator"]["mapping"]
    assert items["discriminator"]["propertyName"] == "@type"
    assert items["oneOf"] == [{"$ref": ref} for ref in mapping.values()]
    assert set(mapping) == {f"type.googleapis.com/{name}" for name in openapi.ERROR_DETAIL_TYPES}
    error_info = _schema(sample, "ErrorInfoDetail")["allOf"]
    assert error_info[0]["properties"]["@type"]["enum"] == ["type.googleapis.com/google.rpc.ErrorInfo"]
    assert error_info[1] == {"$ref": "#/components/schemas/google.rpc.ErrorInfo"}
    assert set(_schema(sample, "google.rpc.ErrorInfo")["properties"]) == {"reason", "domain", "metadata"}


# -- the committed document ---------------------------------------------------

@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(openapi_path().read_text())


def test_committed_document_is_fresh_and_valid(committed: dict) -> None:
    assert openapi.run(check=True) == 0, "gateway/openapi.json is stale: run python scripts/generate.py"
    validate(committed)
    assert committed["openapi"] == "3.0.3"


def test_committed_document_has_every_http_binding_of_the_contract(committed: dict) -> None:
    from google.api import annotations_pb2

    from poet_grpc._gen.poet.v1 import poet_service_pb2, probes_pb2

    wanted = set()
    for module in (poet_service_pb2, probes_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    verb = binding.WhichOneof("pattern")
                    wanted.add((verb, getattr(binding, verb)))
    documented = {(verb, path) for path, methods in committed["paths"].items() for verb in methods}
    assert documented == wanted


def test_committed_document_speaks_the_seed_json(committed: dict) -> None:
    schemas = committed["components"]["schemas"]
    feedback = committed["paths"]["/api/v1/functions/{function_name}/feedback"]["post"]
    body = feedback["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "function_name" not in body and "feedback_type" in body  # snake_case, path field left out
    assert body["feedback_type"]["enum"][1:] == ["performance", "error", "user", "system"]
    assert schemas["poet.v1.SubmitFeedbackResponse"]["properties"]["status"]["enum"][1:] == [
        "accepted", "requires_update"]
    version = schemas["poet.v1.FunctionVersion"]["properties"]
    assert version["status"]["enum"][1:] == ["active", "deprecated"]
    assert version["created_at"]["format"] == "date-time"
    assert version["params"]["type"] == "object"
    assert schemas["poet.v1.Event"]["properties"]["position"]["type"] == "string"  # int64
    ready = committed["paths"]["/health/ready"]["get"]["responses"]
    assert ready["503"]["content"] == ready["200"]["content"]
    assert "429" not in ready  # probes are never rate limited
    events = committed["paths"]["/api/v1/functions/{function_name}/events"]["get"]["parameters"]
    assert {p["name"] for p in events} >= {"start_time", "end_time", "event_type", "limit", "page_token"}


def test_committed_operation_ids_are_unique_and_name_the_route(committed: dict) -> None:
    ids = [op["operationId"] for methods in committed["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
    events = committed["paths"]
    assert events["/api/v1/functions/{function_name}/events"]["get"]["operationId"] == "ListFunctionEvents"
    assert events["/api/v1/events"]["get"]["operationId"] == "ListEvents"
    assert events["/api/v1/functions/{function_name}/events:stream"]["get"]["operationId"] == "StreamFunctionEvents"
    assert events["/api/v1/events:stream"]["get"]["operationId"] == "StreamEvents"


def test_every_detail_type_the_service_sends_is_documented() -> None:
    sources = [ROOT / "poet_grpc" / "api" / "errors.py", ROOT / "gateway" / "envoy.yaml.tmpl"]
    sent = set()
    for source in sources:
        text = source.read_text()
        sent |= {f"google.rpc.{name}" for name in re.findall(r"error_details_pb2\.(\w+)\(", text)}
        sent |= set(re.findall(r"type\.googleapis\.com/(google\.rpc\.\w+)", text))
    assert {"google.rpc.ErrorInfo", "google.rpc.BadRequest"} <= sent  # the scan finds them
    assert sent <= set(openapi.ERROR_DETAIL_TYPES)


def _error_bodies() -> dict[str, dict]:
    """The JSON error bodies the gateway prints for the service's errors, by kind."""
    from poet_grpc.api.errors import to_rpc_status
    from poet_grpc.core import errors

    raised = {
        "invalid": errors.InvalidArgument([errors.FieldViolation("function_name", "required")]),
        "not found": errors.NotFound("function", "nowhere"),
        "quota": errors.QuotaExceeded("too many", violations=[errors.QuotaViolation("principal:a", "10 a day")]),
        "rate limited": errors.RateLimited("slow down", retry_after=1.5),
    }
    bodies = {}
    for kind, exc in raised.items():
        trailers = dict(to_rpc_status(exc).trailing_metadata)
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        bodies[kind] = json_format.MessageToDict(status, preserving_proto_field_name=True)
    return bodies


def test_real_error_bodies_match_the_typed_status_schema(committed: dict) -> None:
    validator = OAS30Validator({"$ref": "#/components/schemas/google.rpc.Status", "components": committed["components"]})
    bodies = _error_bodies()
    sent = {detail["@type"] for body in bodies.values() for detail in body["details"]}
    assert sent == {f"type.googleapis.com/{name}" for name in openapi.ERROR_DETAIL_TYPES}
    for kind, body in bodies.items():
        validator.validate(body)
    unknown = {**bodies["invalid"], "details": [{"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": "x"}]}
    assert not validator.is_valid(unknown)
    wrong = {**bodies["invalid"], "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                               "field_violations": "not a list"}]}
    assert not validator.is_valid(wrong)
