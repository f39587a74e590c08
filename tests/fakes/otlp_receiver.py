"""A local OTLP/gRPC trace collector, for tests of exported traces.

A real grpc server implementing opentelemetry.proto.collector.trace.v1
TraceService on 127.0.0.1, port 0, that keeps every span it is sent:

    with OtlpReceiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...
        spans = receiver.in_trace(trace_id)   # {span name: [Span, ...]}
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans: list = []
        """Every span received (opentelemetry.proto.trace.v1.Span), in arrival order."""
        self.resources: list[dict[str, str]] = []
        """The string attributes of each resource that sent spans."""
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OtlpReceiver":
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(grace=None)

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                self.resources.append({a.key: a.value.string_value for a in resource_spans.resource.attributes})
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def in_trace(self, trace_id: str) -> dict[str, list]:
        """The spans of one trace (hex id), by name."""
        by_name: dict[str, list] = {}
        with self._lock:
            for span in self.spans:
                if span.trace_id.hex() == trace_id:
                    by_name.setdefault(span.name, []).append(span)
        return by_name
