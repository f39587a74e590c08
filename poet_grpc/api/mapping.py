"""Conversions between protobuf messages and the core's domain objects."""

from __future__ import annotations

import time
import uuid
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, resources_pb2
from poet_grpc.core import models
from poet_grpc.core.event_router import SCHEMA_VERSION, Checkpoint
from poet_grpc.core.feedback import Feedback, FeedbackOutcome
from poet_grpc.core.principal import principal_metadata
from poet_grpc.core.versions import VersionDetail
from poet_grpc.generator import OPTIMIZE_FOR, DomainInfo
from poet_grpc.integrations import DeadLetter
from poet_grpc.observability import tracing

FEEDBACK_STATUS = {"accepted": pb.accepted, "requires_update": pb.requires_update}
DEAD_LETTER_STATUS = {"pending": pb.pending, "replayed": pb.replayed}
VERSION_STATUS = {models.VERSION_ACTIVE: resources_pb2.active, models.VERSION_DEPRECATED: resources_pb2.deprecated}


_MIN_NANOS = -62135596800 * 10**9
_MAX_NANOS = 253402300799 * 10**9 + 999_999_999


def nanoseconds(seconds: float) -> int:
    """seconds as nanoseconds a Timestamp can hold: clamped, since a float near
    year 9999 rounds past the end (and a log written before timestamps were checked
    may hold any value), and reading the log must not fail."""
    if not -62135596800.0 <= seconds <= 253402300800.0:  # False for NaN too
        seconds = -62135596800.0 if seconds < 0 else 253402300800.0
    return min(max(int(round(seconds * 1e9)), _MIN_NANOS), _MAX_NANOS)


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(nanoseconds(seconds))
    return ts


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    fill_struct(out, data)
    return out


def plain(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def value(data: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    json_format.ParseDict(data, out)
    return out


# --- enhancement ---------------------------------------------------------


def spec_from_enhance(request: pb.EnhanceRequest) -> models.EnhancementSpec:
    context = {
        "imports": list(request.context.imports),
        "dependencies": list(request.context.dependencies),
        "environment": request.context.environment,
    }
    return models.EnhancementSpec(
        function_name=request.function_name,
        original_code=request.original_code,
        domain=request.domain,
        optimize_for=request.optimize_for,
        context=context,
        module=request.context.module,
    )


def spec_from_transpiled(request: pb.EnhanceTranspiledRequest) -> models.EnhancementSpec:
    context = {
        "source": "aitomatic_transpilation",
        "transpilation_id": request.transpilation_id,
        "agent_id": request.agent_id,
    }
    return models.EnhancementSpec(
        function_name=request.function_name,
        original_code=request.python_code,
        domain=request.domain,
        context=context,
        dana_source=request.dana_source,
        config=plain(request.config),
    )


def spec_from_external(request: pb.EnhanceExternalRequest) -> models.EnhancementSpec:
    """seed 000 external_enhance: the first objective POET knows becomes optimize_for;
    an empty function_name means the first function the code defines."""
    goals = [goal for goal in request.objectives if goal in OPTIMIZE_FOR]
    context = {"source": "external_api", "client_id": request.client_id, "objectives": list(request.objectives)}
    return models.EnhancementSpec(
        function_name=request.function_name,
        original_code=request.function_code,
        domain=request.domain,
        optimize_for=goals[0] if goals else "",
        context=context,
        config=plain(request.parameters),
    )


def enhanced_code(version: models.FunctionVersion) -> resources_pb2.EnhancedCode:
    return resources_pb2.EnhancedCode(python=version.code.python, dana=version.code.dana)


def enhancement_metadata(version: models.FunctionVersion) -> resources_pb2.EnhancementMetadata:
    return resources_pb2.EnhancementMetadata(
        domain=version.spec.domain,
        optimizations=list(version.code.optimizations),
        safety_level=version.code.safety_level,
        generator=version.code.generator,
    )


def function_version(version: models.FunctionVersion, *, with_code: bool) -> resources_pb2.FunctionVersion:
    m = version.metrics
    out = resources_pb2.FunctionVersion(
        function_name=version.function_name,
        version=version.version,
        created_at=timestamp(version.created_at),
        status=VERSION_STATUS[version.status],
        metrics=resources_pb2.VersionMetrics(
            success_rate=m.success_rate,
            avg_duration=m.avg_duration,
            error_rate=m.error_rate,
            feedback_count=m.feedback_count,
            avg_rating=m.avg_rating,
            rating_count=m.rating_count,
            execution_count=m.execution_count,
            failure_count=m.failure_count,
            false_positive_rate=m.false_positive_rate,
            missed_drift_rate=m.missed_drift_rate,
            drift_validations=m.drift_validations,
        ),
        metadata=enhancement_metadata(version),
        params=struct(version.code.params),
        optimize_for=version.spec.optimize_for,
        parent_version=version.parent_version,
        current=version.current,
        update_reason=version.update_reason,
    )
    if with_code:
        out.enhanced_code.CopyFrom(enhanced_code(version))
        out.original_code = version.spec.original_code
    return out


def version_detail(detail: VersionDetail) -> resources_pb2.FunctionVersion:
    out = function_version(detail.version, with_code=True)
    out.changes.extend(resources_pb2.VersionChange(type=c.type, description=c.description) for c in detail.changes)
    out.code_diff = detail.code_diff
    return out


def domain(info: DomainInfo) -> resources_pb2.Domain:
    return resources_pb2.Domain(
        name=info.name,
        description=info.description,
        parameters=[
            resources_pb2.DomainParameter(name=p.name, description=p.description, default_value=value(p.default))
            for p in info.parameters
        ],
    )


# --- feedback ------------------------------------------------------------


def feedback(request: pb.SubmitFeedbackRequest) -> Feedback:
    metrics = None
    if request.HasField("metrics"):
        metrics = {
            "success_rate": request.metrics.success_rate,
            "avg_duration": request.metrics.avg_duration,
            "error_rate": request.metrics.error_rate,
        }
    return Feedback(
        function_name=request.function_name,
        version=request.version,
        feedback_type=pb.FeedbackType.Name(request.feedback_type),
        execution_id=request.execution_id,
        rating=request.rating if request.HasField("rating") else None,
        comments=request.comments,
        metrics=metrics,
        suggestions=list(request.suggestions),
    )


def feedback_response(outcome: FeedbackOutcome) -> pb.SubmitFeedbackResponse:
    return pb.SubmitFeedbackResponse(
        status=FEEDBACK_STATUS[outcome.status],
        new_version=outcome.new_version,
        update_reason=outcome.update_reason,
        feedback_id=outcome.feedback_id,
    )


# --- events --------------------------------------------------------------


def event(record: models.EventRecord) -> events_pb2.Event:
    message = events_pb2.Event()
    fill_event(message, record)
    return message


def fill_event(message: events_pb2.Event, record: models.EventRecord) -> None:
    """Set an empty Event message from record, in place (no temporary messages to
    copy: streams convert every event)."""
    message.id = record.id
    message.type = record.type
    message.source = record.source
    message.correlation_id = record.correlation_id
    message.causation_id = record.causation_id
    metadata = record.metadata
    message.metadata.version = metadata.get("version", "")
    message.metadata.service = metadata.get("service", "")
    message.metadata.environment = metadata.get("environment", "")
    message.metadata.principal = metadata.get("principal", "")
    if "trace_id" in metadata:  # only events appended while tracing
        message.metadata.trace_id = metadata["trace_id"]
        message.metadata.span_id = metadata.get("span_id", "")
    message.position = record.position
    message.function_name = record.function_name
    message.timestamp.FromNanoseconds(nanoseconds(record.timestamp))
    fill_struct(message.payload, record.payload)


def fill_struct(message: struct_pb2.Struct, data: dict[str, Any]) -> None:
    """message.update(data), about twice as fast for flat payloads (the common case)."""
    fields = message.fields
    for key, item in data.items():
        kind = type(item)
        if kind is str:
            fields[key].string_value = item
        elif kind is float or kind is int:
            fields[key].number_value = item
        else:
            _fill_value(fields[key], item)


def _fill_value(message: struct_pb2.Value, item: Any) -> None:
    if item is None:
        message.null_value = struct_pb2.NULL_VALUE
    elif isinstance(item, bool):
        message.bool_value = item
    elif isinstance(item, (int, float)):
        message.number_value = item
    elif isinstance(item, str):
        message.string_value = item
    elif isinstance(item, dict):
        message.struct_value.SetInParent()  # an empty object is still an object
        fill_struct(message.struct_value, item)
    elif isinstance(item, (list, tuple)):
        message.list_value.SetInParent()
        values = message.list_value.values
        for element in item:
            _fill_value(values.add(), element)
    else:
        raise ValueError(f"unexpected type {type(item).__name__} in a JSON value")


def _plain_value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _plain_value(x) for k, x in v.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain_value(x) for x in v.list_value.values]
    if kind == "null_value" or kind is None:
        return None
    return getattr(v, kind)


def plain_fast(message: struct_pb2.Struct) -> dict[str, Any]:
    """plain(message) without json_format's generic walk (PublishEvents' hot path)."""
    return {k: _plain_value(x) for k, x in message.fields.items()}


def event_record(message: events_pb2.Event, *, environment: str) -> models.EventRecord:
    """A published event, with the defaults the server fills in."""
    payload = plain_fast(message.payload)
    source = message.source or "external"
    return models.EventRecord(
        id=message.id or str(uuid.uuid4()),
        type=message.type,
        source=source,
        timestamp=seconds(message.timestamp) if message.HasField("timestamp") else time.time(),
        payload=payload,
        correlation_id=message.correlation_id,
        causation_id=message.causation_id,
        metadata={
            "version": message.metadata.version or SCHEMA_VERSION,
            "service": message.metadata.service or source,
            "environment": message.metadata.environment or environment,
            **principal_metadata(),
            **tracing.event_metadata(),
        },
        function_name=message.function_name or str(payload.get("function_name", "")),
    )


def dead_letter(letter: DeadLetter) -> pb.DeadLetter:
    return pb.DeadLetter(
        id=str(letter.id),
        sink=letter.sink,
        event_id=letter.event_id,
        event_position=letter.event_position,
        event_type=letter.event_type,
        function_name=letter.function_name,
        attempts=letter.attempts,
        last_error=letter.last_error,
        first_failure_time=timestamp(letter.first_failure_at),
        last_failure_time=timestamp(letter.last_failure_at),
        status=DEAD_LETTER_STATUS[letter.status],
    )


def stream_item(item: models.EventRecord | Checkpoint) -> pb.StreamEventsResponse:
    if isinstance(item, Checkpoint):
        return pb.StreamEventsResponse(
            checkpoint=events_pb2.StreamCheckpoint(position=item.position, caught_up=item.caught_up)
        )
    message = pb.StreamEventsResponse()
    fill_event(message.event, item)
    return message


class StreamMessages:
    """Stream messages for events, each event converted once and remembered for the
    last `size` events and at most about `max_bytes` of messages (by identity: the
    live tail hands every subscriber the same EventRecord)."""

    def __init__(self, size: int = 20_000, max_bytes: int = 32 * 1024 * 1024):
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._cache: dict[int, tuple[models.EventRecord, pb.StreamEventsResponse, int]] = {}

    def get(self, item: models.EventRecord | Checkpoint) -> pb.StreamEventsResponse:
        """The message carrying one event (or checkpoint), shared by every stream."""
        if isinstance(item, Checkpoint):
            return stream_item(item)
        return self._message(item)

    def batch(self, records: list[models.EventRecord]) -> pb.StreamEventsResponse:
        """The message carrying these events as one batch."""
        message = pb.StreamEventsResponse()
        message.batch.events.extend([self._message(r).event for r in records])  # extend copies least
        return message

    def _message(self, record: models.EventRecord) -> pb.StreamEventsResponse:
        key = id(record)
        found = self._cache.get(key)
        if found is not None and found[0] is record:
            return found[1]
        message = pb.StreamEventsResponse()
        fill_event(message.event, record)
        size = message.ByteSize()
        if len(self._cache) >= self._size or self._bytes + size > self._max_bytes:
            # Dicts keep insertion order: drop the oldest half.
            for old in list(self._cache)[: max(1, len(self._cache) // 2)]:
                self._bytes -= self._cache.pop(old)[2]
        self._cache[key] = (record, message, size)
        self._bytes += size
        return message


def event_filter(request: pb.ListEventsRequest | pb.StreamEventsRequest) -> models.EventFilter:
    start = end = None
    if isinstance(request, pb.ListEventsRequest):
        start = seconds(request.start_time) if request.HasField("start_time") else None
        end = seconds(request.end_time) if request.HasField("end_time") else None
    return models.EventFilter(
        function_name=request.function_name,
        event_type=request.event_type,
        correlation_id=request.correlation_id,
        start_time=start,
        end_time=end,
    )
