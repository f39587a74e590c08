"""poet_grpc.observability.tracing: the OTEL_* environment, the span helpers, and
what they cost (nothing) while tracing is off."""

from __future__ import annotations

import contextvars
import os
import threading

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from poet_grpc.observability import tracing


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def spans(monkeypatch):
    """Tracing on (console exporter), every finished span also kept in memory."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # the console stays quiet
    provider = tracing.configure()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    tracing.shutdown(provider)


@pytest.mark.parametrize("env", [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"},
                                 {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}])
def test_no_provider_unless_an_exporter_is_asked_for(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.configure() is None
    assert not tracing.enabled()


def test_while_off_every_helper_is_one_shared_no_op():
    assert tracing.span("a") is tracing.span("b", {"k": 1}) is tracing.start_span("c")
    with tracing.span("a") as span:
        span.set_attribute("k", "v")
        assert not span.is_recording()
    assert tracing.current_ids() == ("", "")
    assert tracing.event_metadata() == {}
    assert tracing.link_to({"trace_id": "1" * 32, "span_id": "2" * 16}) == []


@pytest.mark.parametrize("protocol, module", [
    ("", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
    ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
    ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
])
def test_the_otlp_protocol_comes_from_the_environment(monkeypatch, protocol, module):
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    assert type(tracing._exporter("otlp")).__module__ == module


def test_the_traces_protocol_wins_over_the_general_one(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert "proto.http" in type(tracing._exporter("otlp")).__module__


@pytest.mark.parametrize("name, value, named", [
    ("OTEL_TRACES_EXPORTER", "zipkin", "zipkin"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/json"),
])
def test_an_unknown_exporter_or_protocol_is_refused(monkeypatch, name, value, named):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=named):
        tracing.configure()


@pytest.mark.parametrize("env, service", [
    ({}, "poet-grpc"),
    ({"OTEL_SERVICE_NAME": "poet-eu"}, "poet-eu"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=poet-us,deployment.environment=prod"}, "poet-us"),
])
def test_the_resource_comes_from_the_environment(monkeypatch, env, service):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = tracing.configure()
    try:
        assert provider.resource.attributes["service.name"] == service
    finally:
        tracing.shutdown(provider)
    assert not tracing.enabled()


def test_the_sampler_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = tracing.configure()
    try:
        with tracing.span("dropped") as span:
            assert not span.is_recording()
    finally:
        tracing.shutdown(provider)


def test_spans_nest_across_threads_and_events_record_where_they_were_made(spans):
    with tracing.span("outer") as outer:
        sibling = tracing.start_span("sibling")  # not current: the next span is outer's child
        inside = contextvars.copy_context()
        metadata: list[dict] = []

        def work():
            with tracing.span("in.thread"):
                metadata.append(tracing.event_metadata())

        thread = threading.Thread(target=inside.run, args=(work,))
        thread.start()
        thread.join()
        with tracing.use(sibling):
            pass
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert finished.keys() == {"outer", "sibling", "in.thread"}
    root = outer.get_span_context()
    for name in ("sibling", "in.thread"):
        assert finished[name].parent.span_id == root.span_id
        assert finished[name].context.trace_id == root.trace_id
    in_thread = finished["in.thread"].context
    assert metadata == [{"trace_id": format(in_thread.trace_id, "032x"), "span_id": format(in_thread.span_id, "016x")}]
    [link] = tracing.link_to(metadata[0])
    assert (link.context.trace_id, link.context.span_id) == (in_thread.trace_id, in_thread.span_id)
    assert tracing.link_to({"trace_id": "not hex"}) == []


def test_an_exception_marks_the_span_as_failed(spans):
    with pytest.raises(RuntimeError):
        with tracing.span("failing"):
            raise RuntimeError("no")
    started = tracing.start_span("started")
    with pytest.raises(KeyError):
        with tracing.use(started):
            raise KeyError("k")
    for span in spans.get_finished_spans():
        assert span.status.status_code.name == "ERROR", span.name


@pytest.mark.parametrize("code, number, error", [("OK", 0, False), ("NOT_FOUND", 5, False), ("INTERNAL", 13, True)])
def test_the_rpc_status_is_recorded_on_the_current_span(spans, code, number, error):
    with tracing.span("rpc"):
        tracing.set_rpc_status(code, number)
    [span] = spans.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == number
    assert (span.status.status_code.name == "ERROR") is error
