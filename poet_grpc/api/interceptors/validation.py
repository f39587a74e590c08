"""Request validation: every field rule of the API in one table.

Runs before the servicer; a request that breaks any rule is rejected with
INVALID_ARGUMENT and a BadRequest listing every violated field, and nothing is
touched. (protovalidate would keep these rules in the .proto, but its
validate.proto cannot be fetched on the build machines, so the rules live here.)
Rules that need the service's knowledge (known domains, whether code parses)
are checked by the core.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from typing import Callable, Iterator

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb
from poet_grpc.config import Settings
from poet_grpc.core.errors import FieldViolation, InvalidArgument
from poet_grpc.api.interceptors._wrap import UndecodableRequest, check_first, tolerant

Rule = Callable[[Message, Settings], Iterator[FieldViolation]]

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_MODULE = 200
"""Longest context.module, in characters; a qualified function name is at most
MAX_MODULE + 1 + 128."""
VERSION_LABEL = re.compile(r"v[1-9][0-9]{0,8}")
RESERVED_EVENT_TYPES = {
    "enhancement.completed": "use Enhance",
    "function.feedback": "use SubmitFeedback",
    "function.update": "versions change through the learning loop or ActivateVersion",
    "version.activated": "use ActivateVersion",
    "version.deprecated": "use DeprecateVersion",
}
"""Event types that change versions: only the service appends them, so the log
cannot be made to disagree with what the service decided."""
EVENT_TYPE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+){0,15}")
MAX_ID = 128
MAX_TEXT = 10_000
MAX_STREAM_BATCH = 1000
"""Most events one StreamEvents message may carry."""
MIN_TIMESTAMP_SECONDS = -62135596800
"""0001-01-01T00:00:00Z: the first second a google.protobuf.Timestamp may hold..."""
MAX_TIMESTAMP_SECONDS = 253402300799
"""... and 9999-12-31T23:59:59Z, its last."""
PROTOBUF_MAX_DEPTH = 100
"""Nesting beyond which protobuf's parsers refuse a message."""
MAX_STRUCT_DEPTH = 24
"""Deepest nesting (objects and lists) of a free-form Struct. Each JSON level is up
to 3 message levels, and the log hands payloads back inside other messages (a
stream's batch one level deeper than the request was): well under the parsers' limit."""


def _get(message: Message, path: str):
    for part in path.split("."):
        message = getattr(message, part)
    return message


def required(path: str) -> Rule:
    def rule(m, s):
        if not _get(m, path):
            yield FieldViolation(path, "is required")

    return rule


def matches(path: str, pattern: re.Pattern, what: str) -> Rule:
    def rule(m, s):
        text = _get(m, path)
        if text and not pattern.fullmatch(text):
            yield FieldViolation(path, f"must be {what}, got {text[:80]!r}")

    return rule


def max_length(path: str, limit: int | Callable[[Settings], int], unit: str = "characters") -> Rule:
    def rule(m, s):
        bound = limit(s) if callable(limit) else limit
        size = len(_get(m, path).encode()) if unit == "bytes" else len(_get(m, path))
        if size > bound:
            yield FieldViolation(path, f"is {size} {unit}; the limit is {bound}")

    return rule


def module_problem(module: str) -> str | None:
    """What is wrong with a module's dotted name ("mypkg.text"), or None. Each part is
    a Python identifier (str.isidentifier: non-ASCII letters too), not a keyword (an
    import statement could not name it), and in NFKC form (Python reads identifiers
    so: two spellings of one name would be two identities)."""
    if len(module) > MAX_MODULE:
        return f"is {len(module)} characters; the limit is {MAX_MODULE}"
    for part in module.split("."):
        if not part.isidentifier():
            return f'must be dot-separated Python identifiers like "mypkg.text", got {module[:80]!r}'
        if keyword.iskeyword(part):
            return f"{part!r} is a Python keyword, which no importable module is named"
        normal = unicodedata.normalize("NFKC", part)
        if normal != part:
            return f"{part[:80]!r} is not in NFKC form, as Python reads identifiers: write {normal[:80]!r}"
    return None


def function_identity_problem(name: str) -> str | None:
    """What is wrong with a function's identity (a bare name, or one qualified by its
    module: "mypkg.text.first"), or None."""
    module, dot, bare = name.rpartition(".")
    if not IDENTIFIER.fullmatch(bare) or (dot and module_problem(module)):
        return (f"must be a function name (a Python identifier of at most 128 characters), bare or qualified by "
                f"its module (dot-separated identifiers, at most {MAX_MODULE} characters) like "
                f'"mypkg.text.first"; got {name[:80]!r}')
    return None


def function_name(path: str = "function_name", *, optional: bool = False, qualified: bool = False,
                  module_field: str = "") -> list[Rule]:
    """The function_name field: a bare Python identifier, or (qualified: the RPCs that
    address a function by its identity) a bare or module-qualified one. module_field:
    where a dotted name's module belongs instead (named in the refusal)."""

    def rule(m, s):
        text = _get(m, path)
        if not text:
            return
        if qualified:
            problem = function_identity_problem(text)
            if problem is not None:
                yield FieldViolation(path, problem)
        elif not IDENTIFIER.fullmatch(text):
            hint = f"; give the module in {module_field}" if module_field and "." in text else ""
            yield FieldViolation(path, f"must be a Python identifier of at most 128 characters, got {text[:80]!r}{hint}")

    return ([] if optional else [required(path)]) + [rule]


def module(path: str) -> Rule:
    def rule(m, s):
        text = _get(m, path)
        problem = module_problem(text) if text else None
        if problem is not None:
            yield FieldViolation(path, problem)

    return rule


def source_code(path: str) -> list[Rule]:
    return [required(path), max_length(path, lambda s: s.max_code_bytes, "bytes")]


def request_id() -> Rule:
    return max_length("request_id", MAX_ID)


def non_negative(*paths: str) -> Rule:
    def rule(m, s):
        for path in paths:
            if _get(m, path) < 0:
                yield FieldViolation(path, "must not be negative")

    return rule


def _timestamp_problem(ts: timestamp_pb2.Timestamp) -> str | None:
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        return (f"must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z, "
                f"got seconds={ts.seconds}")
    if not 0 <= ts.nanos <= 999_999_999:
        return f"nanos must be between 0 and 999999999, got {ts.nanos}"
    return None


def timestamps(*paths: str) -> Rule:
    """Each of these top-level Timestamp fields, when set, is one a Timestamp may hold."""
    def rule(m, s):
        for path in paths:
            if m.HasField(path):
                problem = _timestamp_problem(getattr(m, path))
                if problem is not None:
                    yield FieldViolation(path, problem)

    return rule


def _nests_deeper(struct: struct_pb2.Struct, limit: int) -> bool:
    """Whether objects and lists in struct nest more than limit levels (the struct is one)."""
    if struct.ByteSize() < 4 * limit:
        return False  # each level takes at least 4 bytes: the common small payload is ruled out cheaply
    values, level = list(struct.fields.values()), 1
    while values:
        inner: list[struct_pb2.Value] = []
        for value in values:
            kind = value.WhichOneof("kind")
            if kind == "struct_value":
                inner.extend(value.struct_value.fields.values())
            elif kind == "list_value":
                inner.extend(value.list_value.values)
        if not inner:
            return False
        level += 1
        if level > limit:
            return True
        values = inner
    return False


def shallow(path: str) -> Rule:
    def rule(m, s):
        if _nests_deeper(_get(m, path), MAX_STRUCT_DEPTH):
            yield FieldViolation(path, f"nests deeper than {MAX_STRUCT_DEPTH} levels")

    return rule


def _feedback_values(m: pb.SubmitFeedbackRequest, s: Settings) -> Iterator[FieldViolation]:
    if m.feedback_type == pb.FEEDBACK_TYPE_UNSPECIFIED:
        yield FieldViolation("feedback_type", "is required: performance, error, user or system")
    if m.HasField("rating") and not 1 <= m.rating <= 5:
        yield FieldViolation("rating", f"must be between 1 and 5, got {m.rating:g}")
    for rate in ("success_rate", "error_rate"):
        value = getattr(m.metrics, rate)
        if not 0 <= value <= 1:
            yield FieldViolation(f"metrics.{rate}", f"must be between 0 and 1, got {value:g}")
    if m.metrics.avg_duration < 0:
        yield FieldViolation("metrics.avg_duration", "must not be negative")
    if len(m.suggestions) > 100:
        yield FieldViolation("suggestions", "at most 100 suggestions")


def _version_label(m: pb.GetVersionRequest, s: Settings) -> Iterator[FieldViolation]:
    if m.version and m.version != "current" and not VERSION_LABEL.fullmatch(m.version):
        yield FieldViolation("version", f'must be "current" or a label like "v2", got {m.version[:40]!r}')


def _time_range(m: pb.ListEventsRequest, s: Settings) -> Iterator[FieldViolation]:
    # Compared as (seconds, nanos): ToNanoseconds raises on a Timestamp out of range.
    start, end = m.start_time, m.end_time
    if m.HasField("start_time") and m.HasField("end_time") and (end.seconds, end.nanos) <= (start.seconds, start.nanos):
        yield FieldViolation("end_time", "must be after start_time")


def _stream_start(m: pb.StreamEventsRequest, s: Settings) -> Iterator[FieldViolation]:
    if m.live_only and m.after_position:
        yield FieldViolation("live_only", "cannot be combined with after_position")
    if not 0 <= m.max_batch_size <= MAX_STREAM_BATCH:
        yield FieldViolation("max_batch_size", f"must be between 0 (one event per message) and {MAX_STREAM_BATCH}, "
                                               f"got {m.max_batch_size}")


def _type_pattern(m: pb.ListEventsRequest | pb.StreamEventsRequest, s: Settings) -> Iterator[FieldViolation]:
    if "*" in m.event_type[:-1]:
        yield FieldViolation("event_type", 'a type, or a prefix ending in "*" like drift.*; "*" only at the end')


def _published_events(m: pb.PublishEventsRequest, s: Settings) -> Iterator[FieldViolation]:
    if not m.events:
        yield FieldViolation("events", "at least one event is required")
    if len(m.events) > s.max_publish_batch:
        yield FieldViolation("events", f"{len(m.events)} events; at most {s.max_publish_batch} per call")
        return
    # Batches usually repeat a few types and function names: check each distinct one once.
    type_problems: dict[str, str | None] = {}
    name_ok: dict[str, bool] = {}
    # No event can be over the limit when the whole request is not: skip the sizes.
    sizes_checked = m.ByteSize() > s.max_event_bytes
    for i, event in enumerate(m.events):
        kind = event.type
        problem = type_problems.get(kind, "")
        if problem == "":
            problem = type_problems[kind] = _event_type_problem(kind)
        if problem is not None:
            yield FieldViolation(f"events[{i}].type", problem)
        for name in ("id", "correlation_id", "causation_id"):
            if len(getattr(event, name)) > MAX_ID:
                yield FieldViolation(f"events[{i}].{name}", f"at most {MAX_ID} characters")
        function_name = event.function_name
        if function_name:
            ok = name_ok.get(function_name)
            if ok is None:
                ok = name_ok[function_name] = function_identity_problem(function_name) is None
            if not ok:
                yield FieldViolation(f"events[{i}].function_name",
                                     'must be a function name, bare or qualified by its module like "mypkg.text.first"')
        if event.HasField("timestamp"):
            problem = _timestamp_problem(event.timestamp)
            if problem is not None:
                yield FieldViolation(f"events[{i}].timestamp", problem)
        if _nests_deeper(event.payload, MAX_STRUCT_DEPTH):
            yield FieldViolation(f"events[{i}].payload", f"nests deeper than {MAX_STRUCT_DEPTH} levels")
        if sizes_checked:
            size = event.ByteSize()
            if size > s.max_event_bytes:
                yield FieldViolation(f"events[{i}]", f"is {size} bytes; the limit is {s.max_event_bytes}")


def _event_type_problem(kind: str) -> str | None:
    if not kind:
        return "is required"
    if kind in RESERVED_EVENT_TYPES:
        return f"{kind} is written by the service itself; {RESERVED_EVENT_TYPES[kind]}"
    if not EVENT_TYPE.fullmatch(kind):
        return f"must be dot-separated words like drift.detected, got {kind[:80]!r}"
    return None


def _replay_selection(m: pb.ReplayDeadLettersRequest, s: Settings) -> Iterator[FieldViolation]:
    if not m.ids and not m.all:
        yield FieldViolation("ids", "give the dead letters to replay, or all: true")
    if m.ids and m.all:
        yield FieldViolation("all", "cannot be combined with ids")
    if len(m.ids) > 1000:
        yield FieldViolation("ids", "at most 1000 ids per call")
    for i, value in enumerate(m.ids[:1000]):
        if not (value.isascii() and value.isdigit()) or len(value) > 18:  # "²".isdigit() is True
            yield FieldViolation(f"ids[{i}]", f"must be a dead letter id (a number), got {value[:40]!r}")


RULES: dict[type[Message], list[Rule]] = {
    pb.EnhanceRequest: [
        *function_name(module_field="context.module"),
        module("context.module"),
        *source_code("original_code"),
        max_length("domain", 64),
        max_length("optimize_for", 64),
        request_id(),
    ],
    pb.EnhanceTranspiledRequest: [
        required("transpilation_id"),
        max_length("transpilation_id", MAX_ID),
        max_length("agent_id", MAX_ID),
        *function_name(),
        *source_code("python_code"),
        max_length("dana_source", lambda s: s.max_code_bytes, "bytes"),
        max_length("domain", 64),
        shallow("config"),
        request_id(),
    ],
    pb.EnhanceExternalRequest: [
        *source_code("function_code"),
        *function_name(optional=True),
        max_length("domain", 64),
        max_length("client_id", MAX_ID),
        shallow("parameters"),
        request_id(),
    ],
    pb.SubmitFeedbackRequest: [
        *function_name(qualified=True),
        required("version"),
        matches("version", VERSION_LABEL, 'a version label like "v2"'),
        max_length("execution_id", MAX_ID),
        max_length("comments", MAX_TEXT),
        _feedback_values,
        request_id(),
    ],
    pb.ListVersionsRequest: [*function_name(qualified=True), non_negative("page_size")],
    pb.GetVersionRequest: [*function_name(qualified=True), required("version"), _version_label],
    pb.ActivateVersionRequest: [
        *function_name(qualified=True),
        required("version"),
        matches("version", VERSION_LABEL, 'a version label like "v2"'),
        max_length("reason", MAX_TEXT),
    ],
    pb.DeprecateVersionRequest: [
        *function_name(qualified=True),
        required("version"),
        matches("version", VERSION_LABEL, 'a version label like "v2"'),
        max_length("reason", MAX_TEXT),
    ],
    pb.ListEventsRequest: [
        *function_name(optional=True, qualified=True),
        max_length("event_type", 200),
        _type_pattern,
        max_length("correlation_id", MAX_ID),
        non_negative("page_size", "limit"),
        timestamps("start_time", "end_time"),
        _time_range,
    ],
    pb.StreamEventsRequest: [
        *function_name(optional=True, qualified=True),
        max_length("event_type", 200),
        _type_pattern,
        max_length("correlation_id", MAX_ID),
        non_negative("after_position"),
        _stream_start,
    ],
    pb.PublishEventsRequest: [_published_events],
    pb.ListDeadLettersRequest: [max_length("sink", 64), non_negative("page_size")],
    pb.ReplayDeadLettersRequest: [required("sink"), max_length("sink", 64), _replay_selection],
}


def violations(request: Message, settings: Settings) -> list[FieldViolation]:
    return [v for rule in RULES.get(type(request), ()) for v in rule(request, settings)]


def undecodable(request: UndecodableRequest) -> InvalidArgument:
    """The refusal of a request whose bytes did not parse."""
    error = request.error
    if "MaxDepth" in error or "recursion" in error.lower():
        problem = f"nests deeper than {PROTOBUF_MAX_DEPTH} levels, protobuf's limit"
    elif "UTF-8" in error:
        problem = "has a string field that is not valid UTF-8"
    else:
        problem = f"is not a valid {request.message_type} message"
    return InvalidArgument.single("request", problem, reason="MALFORMED_REQUEST")


class ValidationInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, settings: Settings):
        self._settings = settings

    def _check(self, request: Message | UndecodableRequest) -> None:
        if isinstance(request, UndecodableRequest):
            raise undecodable(request)
        found = violations(request, self._settings)
        if found:
            raise InvalidArgument(found)

    async def intercept_service(self, continuation, handler_call_details):
        # Requests that do not parse reach _check as UndecodableRequest: refused
        # before anything behind this interceptor sees them.
        return check_first(await continuation(handler_call_details), lambda request, context: self._check(request),
                           deserializer=tolerant)
