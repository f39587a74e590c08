"""OpenTelemetry traces: off unless the standard OTEL_* variables turn them on.

    OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 poet-grpc serve

configure() reads the OpenTelemetry SDK's variables: OTEL_SDK_DISABLED,
OTEL_TRACES_EXPORTER (otlp, console or none; unset means none, where the
specification says otlp, so that a server nobody asked to trace pays nothing),
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL (grpc, the
Python SDK's default, or http/protobuf). The SDK itself reads the rest: the endpoint, headers and timeout (the OTLP exporters),
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the resource; service.name
defaults to "poet-grpc"), OTEL_TRACES_SAMPLER and its _ARG (the provider), and
OTEL_BSP_* (the batch processor, flushed by shutdown()).

The server gets a span per RPC from opentelemetry-instrumentation-grpc, which
continues the caller's W3C ``traceparent`` (gRPC metadata, or the HTTP header
that Envoy passes on). The core and the generator add child spans with span():
poet.generate, poet.prepare (the generator worker process's half), poet.gate,
poet.llm and poet.llm.call, poet.store.commit, poet.regenerate. Events record the
trace and span they were appended in (event_metadata()), so that a regeneration
the learning loop makes later links to the request that caused it (link_to()).

The spans go to a provider of POET's own, the one configure() made last, not to
OpenTelemetry's process-wide global one (which can be set only once, while a
process may open several servers: the tests do). While tracing is off every
helper here returns a shared no-op at once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ContextManager, Mapping, Sequence

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Span

__all__ = [
    "SERVICE_NAME",
    "configure",
    "current_ids",
    "enabled",
    "event_metadata",
    "link_to",
    "server_interceptor",
    "set_rpc_status",
    "shutdown",
    "span",
    "start_span",
    "use",
]

SERVICE_NAME = "poet-grpc"
"""service.name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one."""
UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "poet.v1.ProbeService")
"""Probes and reflection: frequent, and nothing to learn from a trace of them."""
SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
"""The codes that make a server span an error (OpenTelemetry's gRPC conventions);
the others are the caller's doing."""


class _NoSpan:
    """What the helpers return while tracing is off: a span, and a `with` block
    around it, that do nothing. (OpenTelemetry is not even imported then: the
    generator's worker processes never trace.)"""

    __slots__ = ()

    def __enter__(self) -> "_NoSpan":
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def record_exception(self, exception: BaseException, *args, **kwargs) -> None:
        pass

    def end(self, end_time: int | None = None) -> None:
        pass


_NO_SPAN = _NoSpan()
_provider = None
_tracer = None
_api = None
"""The opentelemetry.trace module, once configure() turned tracing on."""


def enabled() -> bool:
    return _tracer is not None


def configure():
    """A TracerProvider exporting as the OTEL_* environment says, or None when it
    asks for no traces (the default). Its spans are what span() and start_span()
    make from now on. ValueError for an exporter or protocol it does not know."""
    global _api, _provider, _tracer
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters = [_exporter(name) for name in names if name and name != "none"]
    if not exporters:
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = "service.name" in OTELResourceDetector().detect().attributes
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": SERVICE_NAME}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _api, _provider, _tracer = trace, provider, provider.get_tracer("poet_grpc")
    return provider


def _exporter(name: str):
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}; use otlp, console or none")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc").strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unknown protocol {protocol!r}; use grpc or http/protobuf")
    return OTLPSpanExporter()


def shutdown(provider) -> None:
    """Export what is left and stop; span() is a no-op again if provider was the current one."""
    global _api, _provider, _tracer
    if provider is _provider:
        _api = _provider = _tracer = None
    provider.shutdown()


def server_interceptor(provider):
    """The grpc.aio server interceptor that makes a span per RPC, continuing the
    caller's traceparent; probes, health and reflection are not traced."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    untraced = filters.any_of(*(filters.service_name(name) for name in UNTRACED_SERVICES))
    return aio_server_interceptor(tracer_provider=provider, filter_=filters.negate(untraced))


def span(name: str, attributes: Mapping[str, Any] | None = None,
         links: Sequence["Link"] | None = None) -> ContextManager["Span"]:
    """A child span of the current one, current within the `with` block; it records
    an exception that leaves the block."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes, links=links)


def start_span(name: str, attributes: Mapping[str, Any] | None = None) -> "Span":
    """A child span of the current one that is not made current: for work that
    starts here and ends elsewhere (end it, or pass it to use())."""
    if _tracer is None:
        return _NO_SPAN
    return _tracer.start_span(name, attributes=attributes)


def use(started: "Span") -> ContextManager["Span"]:
    """started made current for a `with` block, and ended (with any exception) when it closes."""
    if _api is None or not started.is_recording():
        return _NO_SPAN
    return _api.use_span(started, end_on_exit=True)


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as hex, ("", "") when there is none."""
    if _tracer is None:
        return "", ""
    context = _api.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def event_metadata() -> dict[str, str]:
    """{"trace_id", "span_id"} for an event appended in the current span; {} outside one."""
    trace_id, span_id = current_ids()
    return {"trace_id": trace_id, "span_id": span_id} if trace_id else {}


def link_to(metadata: Mapping[str, str]) -> list["Link"]:
    """A link to the span an event was appended in (its event_metadata()), if it has one."""
    if _api is None:
        return []
    try:
        context = _api.SpanContext(int(metadata.get("trace_id", ""), 16), int(metadata.get("span_id", ""), 16),
                                   is_remote=True, trace_flags=_api.TraceFlags(_api.TraceFlags.SAMPLED))
    except (TypeError, ValueError):
        return []
    return [_api.Link(context)] if context.is_valid else []


def set_rpc_status(code: str, number: int) -> None:
    """Record a call's final gRPC code (its name and number) on the current (RPC)
    span. The instrumentation sees codes set through context.abort() and
    set_code(), not those of abort_with_status(), which the error mapping uses."""
    if _tracer is None:
        return
    current = _api.get_current_span()
    if current.is_recording():
        current.set_attribute("rpc.grpc.status_code", number)
        if code in SERVER_ERRORS:
            current.set_status(_api.StatusCode.ERROR, code)
