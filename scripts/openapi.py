"""Generate gateway/openapi.json (OpenAPI 3.0) from the proto contract.

    python scripts/openapi.py          # write gateway/openapi.json
    python scripts/openapi.py --check  # exit 1 if the committed document is stale

scripts/generate.py runs this too, so one command regenerates everything.

Why a generator of our own: the proto -> OpenAPI generators that understand
``google.api.http`` (grpc-gateway's protoc-gen-openapiv2, gnostic's
protoc-gen-openapi, protoc-gen-connect-openapi) are Go binaries, on neither
PyPI nor npm, and a development machine here has only Python and npm. This
module reads the FileDescriptorSet protoc (grpc_tools) builds from proto/ and
describes exactly what Envoy's transcoder does with the gateway's print options:

- paths, verbs, path and query parameters and bodies from ``google.api.http``
  (additional bindings included; GET fields not in the path are query
  parameters, nested message fields as ``a.b``);
- JSON names are the proto field names (snake_case), enums their value names
  (the lowercase values of the REST API), 64-bit integers strings,
  Timestamp an RFC 3339 date-time string, Duration "1.5s", Struct an object,
  Value any JSON value;
- ``google.api.field_behavior``: REQUIRED fields are ``required``,
  OUTPUT_ONLY fields ``readOnly``;
- server-streaming methods answer ``text/event-stream`` (one frame per
  message: ``id:`` its log position, ``data:`` the JSON) and take the
  ``Last-Event-ID`` header a reconnecting EventSource sends;
- errors: ``google.rpc.Status`` as JSON, its ``details`` one of the typed
  detail messages POET sends (``@type`` discriminates), the HTTP status mapped
  from the gRPC code; the gateway's own refusals (malformed JSON, unknown
  query parameter, unknown path) have the same shape;
- operationIds from the RPC name and the route (``_operation_id``), so they do
  not depend on the order of a method's bindings.

Comments of the proto become descriptions. The output is deterministic.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

from poet_grpc.api.interceptors.auth import OPEN_PREFIXES as NO_CREDENTIAL
from poet_grpc.api.interceptors.rate_limit import EXEMPT_PREFIXES as RATE_LIMIT_EXEMPT

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUTPUT = ROOT / "gateway" / "openapi.json"
OPENAPI_VERSION = "3.0.3"
API_PACKAGE_PREFIX = "poet."

EXTRA_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
"""Not imported by the contract, but every error body is made of them."""

ERROR_DETAIL_TYPES = ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo", "google.rpc.ResourceInfo",
                      "google.rpc.QuotaFailure")
"""Every detail message POET's errors carry (poet_grpc/api/errors.py, the gateway's own refusals)."""

TYPE_URL_PREFIX = "type.googleapis.com/"

STATUS_FROM_HEADER = {
    "poet.v1.ProbeService.GetReadiness": (
        "503",
        "Not ready: a check failed or the service is shutting down. The same body, with status not_ready.",
    ),
}
"""Successful gRPC answers the gateway turns into another HTTP status (the
x-poet-http-status header, gateway/envoy.yaml.tmpl); they keep the response schema."""

FieldProto = descriptor_pb2.FieldDescriptorProto
_INT32 = {FieldProto.TYPE_INT32, FieldProto.TYPE_SINT32, FieldProto.TYPE_SFIXED32}
_UINT32 = {FieldProto.TYPE_UINT32, FieldProto.TYPE_FIXED32}
_INT64 = {FieldProto.TYPE_INT64, FieldProto.TYPE_SINT64, FieldProto.TYPE_SFIXED64}
_UINT64 = {FieldProto.TYPE_UINT64, FieldProto.TYPE_FIXED64}

_INT64_SCHEMA = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
_UINT64_SCHEMA = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}

WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "The type URL of the message."}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.Int64Value": _INT64_SCHEMA,
    "google.protobuf.UInt64Value": _UINT64_SCHEMA,
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
"""Well-known types print as these JSON values (proto3 JSON mapping); inlined, never components."""

QUERY_UNSUPPORTED = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
                     "google.protobuf.Any", "google.protobuf.Empty"}


# -- reading the descriptors ---------------------------------------------------

def _include_dirs() -> list[Path]:
    import grpc_tools
    import google.api  # googleapis-common-protos ships the .proto sources

    site_root = Path(google.api.__path__[0]).parent.parent
    return [PROTO_DIR, Path(grpc_tools.__file__).parent / "_proto", site_root]


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """proto/**/*.proto and the google.rpc error types, with imports and comments."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.pb"
        args = ["grpc_tools.protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--descriptor_set_out={out}", "--include_imports", "--include_source_info", *protos, *EXTRA_PROTOS]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comment(text: str) -> str:
    lines = [line.strip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines).strip()


class _Index:
    """Messages, enums and comments of a FileDescriptorSet, by full name."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]):
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, ...], str] = {}
        self.files = list(files)
        for file in self.files:
            locations = {tuple(loc.path): _comment(loc.leading_comments)
                         for loc in file.source_code_info.location if loc.leading_comments}
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(prefix + message.name, message, (4, i), locations)
            for i, enum in enumerate(file.enum_type):
                self._add_enum(prefix + enum.name, enum, (5, i), locations)
            for i, service in enumerate(file.service):
                name = prefix + service.name
                self.comments[(name,)] = locations.get((6, i), "")
                for j, method in enumerate(service.method):
                    self.comments[(name, method.name)] = locations.get((6, i, 2, j), "")

    def _add_message(self, name, message, path, locations) -> None:
        self.messages[name] = message
        self.comments[(name,)] = locations.get(path, "")
        for j, field in enumerate(message.field):
            self.comments[(name, field.name)] = locations.get((*path, 2, j), "")
        for k, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, (*path, 3, k), locations)
        for k, enum in enumerate(message.enum_type):
            self._add_enum(f"{name}.{enum.name}", enum, (*path, 4, k), locations)

    def _add_enum(self, name, enum, path, locations) -> None:
        self.enums[name] = enum
        self.comments[(name,)] = locations.get(path, "")
        for j, value in enumerate(enum.value):
            self.comments[(name, value.name)] = locations.get((*path, 2, j), "")

    def comment(self, *key: str) -> str:
        return self.comments.get(key, "")


def _behaviors(field: descriptor_pb2.FieldDescriptorProto) -> set[int]:
    return set(field.options.Extensions[field_behavior_pb2.field_behavior])


def _is_map(index: _Index, field: descriptor_pb2.FieldDescriptorProto) -> bool:
    if field.type != FieldProto.TYPE_MESSAGE or field.label != FieldProto.LABEL_REPEATED:
        return False
    return index.messages[field.type_name.lstrip(".")].options.map_entry


# -- schemas -------------------------------------------------------------------

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """Component schemas, built on demand as operations refer to messages."""

    def __init__(self, index: _Index):
        self.index = index
        self.components: dict[str, dict[str, Any]] = {}

    def message_ref(self, name: str) -> dict[str, Any]:
        """A reference to the component for message ``name`` (inline for well-known types)."""
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursive messages
            self.components[name] = self.message_schema(name)
        return _ref(name)

    def message_schema(self, name: str, *, without: Iterable[str] = ()) -> dict[str, Any]:
        """The object schema of message ``name``, leaving out the fields in ``without``."""
        message = self.index.messages[name]
        skipped = set(without)
        properties: dict[str, Any] = {}
        required: list[str] = []
        oneofs: dict[int, list[str]] = {}
        for field in message.field:
            if field.name in skipped:
                continue
            properties[field.name] = self.field_schema(name, field)
            behaviors = _behaviors(field)
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.name)
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneofs.setdefault(field.oneof_index, []).append(field.name)
        schema: dict[str, Any] = {"type": "object"}
        description = self.index.comment(name)
        for members in oneofs.values():
            description += f"\n\nAt most one of: {', '.join(members)}."
        if description.strip():
            schema["description"] = description.strip()
        schema["properties"] = properties
        if required:
            schema["required"] = required
        return schema

    def field_schema(self, message_name: str, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if _is_map(self.index, field):
            entry = self.index.messages[field.type_name.lstrip(".")]
            value = next(f for f in entry.field if f.name == "value")
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.single_schema(value)}
        elif field.label == FieldProto.LABEL_REPEATED:
            schema = {"type": "array", "items": self.single_schema(field)}
        else:
            schema = self.single_schema(field)
        extra: dict[str, Any] = {}
        description = self.index.comment(message_name, field.name)
        if description:
            extra["description"] = description
        if field_behavior_pb2.OUTPUT_ONLY in _behaviors(field):
            extra["readOnly"] = True
        if not extra:
            return schema
        if "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref
            return {"allOf": [schema], **extra}
        if schema.get("description") and extra.get("description"):  # an enum's values
            extra["description"] += "\n\n" + schema["description"]
        return {**schema, **extra}

    def single_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        """The schema of one value of the field (an element, for repeated fields)."""
        kind = field.type
        if kind == FieldProto.TYPE_MESSAGE:
            return self.message_ref(field.type_name.lstrip("."))
        if kind == FieldProto.TYPE_ENUM:
            return self.enum_schema(field.type_name.lstrip("."))
        if kind in _INT32:
            return {"type": "integer", "format": "int32", "minimum": -2147483648, "maximum": 2147483647}
        if kind in _UINT32:
            return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295}
        if kind in _INT64:
            return dict(_INT64_SCHEMA)
        if kind in _UINT64:
            return dict(_UINT64_SCHEMA)
        if kind == FieldProto.TYPE_DOUBLE:
            return {"type": "number", "format": "double"}
        if kind == FieldProto.TYPE_FLOAT:
            return {"type": "number", "format": "float"}
        if kind == FieldProto.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldProto.TYPE_STRING:
            return {"type": "string"}
        if kind == FieldProto.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        raise ValueError(f"unsupported field type {kind} of {field.name}")

    def enum_schema(self, name: str) -> dict[str, Any]:
        enum = self.index.enums[name]
        lines = [self.index.comment(name)] if self.index.comment(name) else []
        for value in enum.value:
            comment = self.index.comment(name, value.name).replace("\n", " ")
            lines.append(f"- `{value.name}`: {comment}" if comment else f"- `{value.name}`")
        return {"type": "string", "enum": [v.name for v in enum.value], "description": "\n".join(lines)}


# -- operations ----------------------------------------------------------------

def _http_bindings(method: descriptor_pb2.MethodDescriptorProto) -> list[tuple[str, str, Any]]:
    """[(verb, path template, rule)] of the method's google.api.http option, primary first."""
    if not method.options.HasExtension(annotations_pb2.http):
        return []
    rule = method.options.Extensions[annotations_pb2.http]
    found = []
    for binding in (rule, *rule.additional_bindings):
        pattern = binding.WhichOneof("pattern")
        if pattern is None:
            continue
        if pattern == "custom":
            found.append((binding.custom.kind.lower(), binding.custom.path, binding))
        else:
            found.append((pattern, getattr(binding, pattern), binding))
    return found


def _path_template(template: str) -> tuple[str, list[str]]:
    """("/a/{b}/c:verb", ["b"]) from a google.api.http template ("{b=*}" -> "{b}")."""
    names: list[str] = []
    out, i = [], 0
    while i < len(template):
        if template[i] == "{":
            end = template.index("}", i)
            name = template[i + 1:end].split("=", 1)[0]
            names.append(name)
            out.append("{" + name + "}")
            i = end + 1
        else:
            out.append(template[i])
            i += 1
    return "".join(out), names


def _camel(words: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]", words))


def _scope_word(collection: str, variable: str) -> str:
    """The singular name of a parent: its path variable's name (function_name ->
    Function, shelf -> Shelf), or, for a generic variable (name, parent, id) or a
    wildcard inside a pattern, the collection without its plural s (dead-letters ->
    DeadLetter)."""
    base = re.sub(r"_(name|id)$", "", variable)
    if base and base not in ("name", "id", "parent"):
        return _camel(base)
    word = _camel(collection)
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _operation_id(method_name: str, template: str) -> str:
    """The RPC name with the route's parents after its verb: ListEvents at
    /api/v1/functions/{function_name}/events is ListFunctionEvents, at
    /api/v1/events ListEvents; GetVersion at
    /api/v1/functions/{function_name}/versions/{version} is GetFunctionVersion.
    A function of the route alone, so no id depends on the order of the bindings."""
    segments: list[tuple[str, str]] = []  # (literal or wildcard, the variable a plain {x} binds)
    for match in re.finditer(r"\{([^}=]+)(?:=([^}]*))?\}|[^/{}]+", re.sub(r":[\w-]+$", "", template)):
        if match.group(1) is None:
            segments.append((match.group(), ""))
        elif match.group(2) is None:
            segments.append(("*", match.group(1)))
        else:
            segments += [(part, "") for part in match.group(2).split("/")]
    wildcard = ("*", "**")
    parents = [_scope_word(collection, variable)
               for (collection, _), (segment, variable) in zip(segments, segments[1:])
               if segment in wildcard and collection not in wildcard]
    if segments and segments[-1][0] in wildcard and parents:
        parents.pop()  # the resource itself, not a parent
    scope = "".join(parents)
    verb = re.match(r"[A-Z][a-z0-9]*", method_name)
    head, rest = (verb.group(), method_name[verb.end():]) if verb else ("", method_name)
    return method_name if rest.startswith(scope) else head + scope + rest


def _field_path(index: _Index, message_name: str, dotted: str) -> descriptor_pb2.FieldDescriptorProto:
    message = index.messages[message_name]
    head, _, rest = dotted.partition(".")
    field = next((f for f in message.field if f.name == head), None)
    if field is None:
        raise ValueError(f"{message_name} has no field {head!r} (http rule)")
    if rest:
        return _field_path(index, field.type_name.lstrip("."), rest)
    return field


def _query_parameters(schemas: _Schemas, message_name: str, skip: set[str], prefix: str = "",
                      depth: int = 0) -> list[dict[str, Any]]:
    """Query parameters for the fields of a message not bound to the path or body."""
    index = schemas.index
    parameters = []
    for field in index.messages[message_name].field:
        name = prefix + field.name
        if name in skip or field_behavior_pb2.OUTPUT_ONLY in _behaviors(field) or _is_map(index, field):
            continue
        type_name = field.type_name.lstrip(".")
        if field.type == FieldProto.TYPE_MESSAGE and type_name not in WELL_KNOWN:
            if field.label != FieldProto.LABEL_REPEATED and depth < 3:
                parameters += _query_parameters(schemas, type_name, skip, name + ".", depth + 1)
            continue
        if type_name in QUERY_UNSUPPORTED:
            continue
        schema = schemas.field_schema(message_name, field)
        description = schema.pop("description", "")
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if description:
            parameter["description"] = description
        if field.label == FieldProto.LABEL_REPEATED:
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _error_responses(schemas: _Schemas) -> dict[str, Any]:
    status = {"application/json": {"schema": schemas.message_ref("google.rpc.Status")}}
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before retrying (also in the RetryInfo detail).",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    return {
        "401": {
            "description": "UNAUTHENTICATED: no credential, or one that does not verify (the server has an auth"
                           " file). Details: ErrorInfo (reason CREDENTIAL_MISSING, INVALID_API_KEY, JWT_EXPIRED...).",
            "headers": {"WWW-Authenticate": {"description": "Always `Bearer`.", "schema": {"type": "string"}}},
            "content": status,
        },
        "403": {
            "description": "PERMISSION_DENIED: the credential lacks the role (ErrorInfo reason ROLE_REQUIRED, metadata"
                           " required_role) or, for EnhanceTranspiled, the service claim (SERVICE_CLAIM_REQUIRED).",
            "content": status,
        },
        "429": {
            "description": "RESOURCE_EXHAUSTED: the client's rate limit is exceeded. Details: ErrorInfo"
                           " (reason RATE_LIMITED) and RetryInfo.",
            "headers": retry_after,
            "content": status,
        },
        "default": {
            "description": (
                "An error, as a google.rpc.Status: the gRPC code, a message and details: ErrorInfo (reason,"
                " domain poet.v1) always, then by kind BadRequest (field violations), ResourceInfo, QuotaFailure"
                " or RetryInfo."
                " The HTTP status follows the code: INVALID_ARGUMENT, FAILED_PRECONDITION and OUT_OF_RANGE 400,"
                " UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS 409, ABORTED 409"
                " (a concurrent call won a race, e.g. reason CONCURRENT_ENHANCEMENT: retry after Retry-After, also"
                " in RetryInfo), RESOURCE_EXHAUSTED 429, INTERNAL 500, UNIMPLEMENTED 501, UNAVAILABLE 503 (with"
                " Retry-After),"
                " DEADLINE_EXCEEDED 504. The gateway's own refusals have the same shape: malformed JSON, a value"
                " of the wrong type or an unknown query parameter 400 (reason MALFORMED_REQUEST), an unknown"
                " path 404 (UNKNOWN_PATH), the server unreachable 503 (UPSTREAM_UNAVAILABLE)."
            ),
            "headers": retry_after,
            "content": status,
        },
    }


def _operation(schemas: _Schemas, service: str, method: descriptor_pb2.MethodDescriptorProto,
               verb: str, template: str, rule: Any) -> tuple[str, dict[str, Any]]:
    index = schemas.index
    request = method.input_type.lstrip(".")
    response = method.output_type.lstrip(".")
    path, path_fields = _path_template(template)
    short_service = service.rsplit(".", 1)[-1]
    description = index.comment(service, method.name)
    operation: dict[str, Any] = {
        "operationId": _operation_id(method.name, template),
        "tags": [short_service],
    }
    if description:
        operation["summary"] = description.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".")
        operation["description"] = description

    parameters = []
    for name in path_fields:
        field = _field_path(index, request, name)
        schema = schemas.single_schema(field)
        parameter = {"name": name, "in": "path", "required": True, "schema": schema}
        if index.comment(request, name):
            parameter["description"] = index.comment(request, name)
        parameters.append(parameter)

    body = rule.body
    if body == "*":
        skip = set(path_fields)
        body_schema = (schemas.message_schema(request, without=skip) if skip else schemas.message_ref(request))
        required_fields = (body_schema if skip else schemas.message_schema(request)).get("required")
        operation["requestBody"] = {
            "required": bool(required_fields),
            "content": {"application/json": {"schema": body_schema}},
        }
    else:
        skip = set(path_fields) | ({body} if body else set())
        parameters += _query_parameters(schemas, request, skip)
        if body:
            field = _field_path(index, request, body)
            operation["requestBody"] = {
                "required": field_behavior_pb2.REQUIRED in _behaviors(field),
                "content": {"application/json": {"schema": schemas.field_schema(request, field)}},
            }
    if method.server_streaming:  # answered by poet_grpc/api/http_side.py, which resumes from it
        parameters.append({
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "The `id:` of the last frame received: the stream resumes right after it (it wins "
                           "over after_position and live_only, as a reconnecting EventSource repeats the URL).",
            "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
        })
    if parameters:
        operation["parameters"] = parameters

    if rule.response_body:
        field = _field_path(index, response, rule.response_body)
        response_schema = schemas.field_schema(response, field)
    else:
        response_schema = schemas.message_ref(response)
    if method.server_streaming:
        ok = {
            "description": (
                "Server-Sent Events (text/event-stream): one frame per message, `id: <log position>` then "
                f"`data: {{...}}`, a JSON {response} (the schema in x-sse-data). The stream stays open; an "
                "error before the first message is an ordinary error response, one after it an "
                "`event: error` frame."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}, "x-sse-data": response_schema}},
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": response_schema}}}
    responses: dict[str, Any] = {"200": ok}
    extra = STATUS_FROM_HEADER.get(f"{service}.{method.name}")
    if extra:
        responses[extra[0]] = {"description": extra[1], "content": {"application/json": {"schema": response_schema}}}
    for code, value in _error_responses(schemas).items():
        if code == "429" and f"/{service}/".startswith(RATE_LIMIT_EXEMPT):
            continue
        if code in ("401", "403") and f"/{service}/".startswith(NO_CREDENTIAL):
            continue
        responses.setdefault(code, value)
    operation["responses"] = responses
    # A bearer credential, or none when the server runs without an auth file.
    operation["security"] = [] if f"/{service}/".startswith(NO_CREDENTIAL) else [{"bearerAuth": []}, {}]
    return path, operation


def build(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI document for every service of the API package with HTTP bindings."""
    index = _Index(fds.file)
    schemas = _Schemas(index)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: dict[str, str] = {}
    tags = []
    for file in index.files:
        if not file.package.startswith(API_PACKAGE_PREFIX):
            continue
        for service in file.service:
            full = f"{file.package}.{service.name}"
            bound = False
            for method in service.method:
                for verb, template, rule in _http_bindings(method):
                    path, operation = _operation(schemas, full, method, verb, template, rule)
                    if verb in paths.get(path, {}):
                        raise ValueError(f"{verb.upper()} {path} is bound twice")
                    where = f"{verb.upper()} {path}"
                    clash = operation_ids.setdefault(operation["operationId"], where)
                    if clash != where:
                        raise ValueError(f"{clash} and {where} would both be operationId {operation['operationId']}")
                    paths.setdefault(path, {})[verb] = operation
                    bound = True
            if bound:
                tags.append({"name": service.name, "description": index.comment(full)})
    _type_error_details(schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "POET API",
            "version": "v1",
            "description": (
                "REST/JSON face of the POET gRPC service (package poet.v1), served by the Envoy gateway and "
                "generated from proto/ by scripts/openapi.py: do not edit. JSON uses the proto field names, "
                "enum value names and strings for 64-bit integers. Served at GET /openapi.json."
            ),
        },
        "tags": sorted(tags, key=lambda tag: tag["name"]),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key or an RS256 JWT, as `Authorization: Bearer <credential>`.",
                }
            },
        },
    }


def _detail_component(name: str) -> str:
    """google.rpc.ErrorInfo -> ErrorInfoDetail: the schema of that message as an error detail."""
    return name.rsplit(".", 1)[-1] + "Detail"


def _type_error_details(schemas: _Schemas) -> None:
    """google.rpc.Status.details: one of ERROR_DETAIL_TYPES, each a google.protobuf.Any
    in JSON (the type URL in @type beside the message's fields), @type the discriminator."""
    mapping = {}
    for name in ERROR_DETAIL_TYPES:
        url = TYPE_URL_PREFIX + name
        component = _detail_component(name)
        schemas.components[component] = {
            "description": f"A {name} error detail: its type URL in @type, then the fields of {name}.",
            "allOf": [
                {"type": "object", "properties": {"@type": {"type": "string", "enum": [url]}}, "required": ["@type"]},
                schemas.message_ref(name),
            ],
        }
        mapping[url] = _ref(component)["$ref"]
    schemas.message_ref("google.rpc.Status")
    details = schemas.components["google.rpc.Status"]["properties"]["details"]
    details["items"] = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "@type", "mapping": mapping},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def run(*, check: bool, output: Path = OUTPUT) -> int:
    """Write the document, or (check) compare it with the committed one; 0 when fresh."""
    wanted = render(build(descriptor_set()))
    present = output.read_text(encoding="utf-8") if output.exists() else ""
    name = str(output.relative_to(ROOT)) if output.is_relative_to(ROOT) else str(output)
    if check:
        if wanted != present:
            diff = difflib.unified_diff(present.splitlines(), wanted.splitlines(), name, name, lineterm="", n=1)
            print("\n".join(list(diff)[:30]))
            print(f"stale generated file: {name}; run: python scripts/generate.py", file=sys.stderr)
            return 1
        print(f"OpenAPI document is fresh ({name})")
        return 0
    output.write_text(wanted, encoding="utf-8")
    print(f"wrote {name}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if gateway/openapi.json differs from the protos")
    return run(check=parser.parse_args().check)


if __name__ == "__main__":
    sys.exit(main())
