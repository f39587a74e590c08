"""Prometheus metrics of one server: every metric object, on a registry of its own.

Several servers may run in one process (the tests do), so nothing goes to
prometheus_client's global registry: each Core owns a Metrics, the parts that
count are given it, and `exposition()` renders it for GET /metrics.

Labels take bounded values only: the RPC methods the server registered, gRPC
codes, domains, the gate's checks, the LLM outcomes, the learning policy's
patterns, the log's consumers and the sink names of the sinks file. Never a
function name, a caller, an id or free text. The README's "Metrics" section lists
every metric and its labels.

What is state rather than a count of events (the log's size and positions,
consumers' lag, breaker states) is read when scraped, from what the server holds
in memory: a scrape makes no store query.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GATE_CHECKS", "UNKNOWN", "Metrics", "MethodMetrics", "SinkMetrics"]

UNKNOWN = "unknown"
"""The label value of what is not known: an unregistered RPC method, an unknown domain."""
OTHER = "other"
"""The label value of a reason outside its known set."""
GATE_CHECKS = frozenset({
    "original", "syntax", "compile", "function", "signature", "capability", "import", "import_timeout", "bandit",
    "sandbox",
})
"""The gate's checks (generator.GateError.check), which are its rejection reasons.
The import check's verdict comes from the sandbox, so any other value counts as "other"."""
BREAKER_VALUES = {"closed": 0.0, "half_open": 0.5, "open": 1.0}

RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Cheap calls take well under a millisecond, Enhance tens of milliseconds to seconds."""
GENERATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class MethodMetrics:
    """The series of one RPC method, resolved once: labels() takes a lock and a
    lookup, which the interceptor would otherwise pay on every call."""

    __slots__ = ("started", "in_flight", "duration", "sent", "_handled", "_counter", "_labels")

    def __init__(self, metrics: "Metrics", labels: tuple[str, str, str]):
        self.started = metrics.rpc_started.labels(*labels)
        self.in_flight = metrics.rpc_in_flight.labels(*labels)
        self.duration = metrics.rpc_duration.labels(*labels)
        streams = labels[0] in ("server_stream", "bidi_stream")
        self.sent = metrics.rpc_messages_sent.labels(*labels) if streams else None
        self._counter = metrics.rpc_handled
        self._labels = labels
        self._handled: dict[str, Any] = {}

    def handled(self, code: str):
        """The handled-calls counter of this method and a gRPC code name."""
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._counter.labels(*self._labels, code)
        return child


@dataclass(frozen=True)
class SinkMetrics:
    """The counters of one outbound sink."""

    delivered: Any
    failed_retryable: Any
    failed_final: Any
    retried: Any
    dead_lettered: Any


class Metrics:
    """Every metric of one server, on its own registry; the attributes are the metric
    objects, the methods record what takes more than one of them or a bounded label."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        # The seed's names (000: Monitoring & Observability).
        self.enhancement_requests = Counter(
            "poet_enhancement_requests_total", "Enhancement requests the core handled, by domain and outcome",
            ["domain", "status"], registry=r)
        self.enhancement_duration = Histogram(
            "poet_enhancement_duration_seconds", "Time to answer an enhancement request (generation and storing)",
            ["domain"], buckets=GENERATION_BUCKETS, registry=r)
        self.active_enhancements = Gauge(
            "poet_active_enhancements", "Enhancement requests being handled now", registry=r)
        self.consumer_leases = Gauge(
            "poet_event_consumer_lease_held",
            "1 while this process holds the consumer's lease (runs it), else 0: one replica at a time",
            ["consumer"], registry=r)

        # Per RPC, under the names of go-grpc-prometheus, so that its dashboards work.
        self.rpc_started = Counter(
            "grpc_server_started_total", "RPCs started on the server", _RPC_LABELS, registry=r)
        self.rpc_handled = Counter(
            "grpc_server_handled_total", "RPCs completed on the server, by gRPC code",
            (*_RPC_LABELS, "grpc_code"), registry=r)
        self.rpc_duration = Histogram(
            "grpc_server_handling_seconds", "Time from an RPC's start to its status (a stream's whole life)",
            _RPC_LABELS, buckets=RPC_BUCKETS, registry=r)
        self.rpc_in_flight = Gauge(
            "grpc_server_in_flight_calls", "RPCs being handled now (open streams included)", _RPC_LABELS, registry=r)
        self.rpc_messages_sent = Counter(
            "grpc_server_msg_sent_total", "Messages sent on server-streaming RPCs", _RPC_LABELS, registry=r)
        self._methods: dict[tuple[str, str, str], MethodMetrics] = {}

        # The event log.
        self.events_appended = Counter(
            "poet_event_log_appended_events_total", "Events appended to the log by this server", registry=r)
        self.append_duration = Histogram(
            "poet_event_log_append_seconds",
            "Time from a log transaction's submission to its durable commit (group commit included)",
            buckets=APPEND_BUCKETS, registry=r)

        # Outbound sinks.
        self.sink_deliveries = Counter(
            "poet_sink_deliveries_total", "Events a sink delivered", ["sink"], registry=r)
        self.sink_failures = Counter(
            "poet_sink_failures_total", "Failed delivery requests of a sink", ["sink", "retryable"], registry=r)
        self.sink_retries = Counter(
            "poet_sink_retries_total", "Delivery requests a sink sent again after a failure", ["sink"], registry=r)
        self.sink_dead_letters = Counter(
            "poet_sink_dead_letters_total", "Events a sink gave up on (written to the dead letters)", ["sink"],
            registry=r)

        # The generator.
        self.gate_duration = Histogram(
            "poet_gate_duration_seconds", "Time the safety gate took on one version, by who wrote it",
            ["generator"], buckets=GENERATION_BUCKETS, registry=r)
        self.gate_rejections = Counter(
            "poet_gate_rejections_total", "Versions the safety gate refused, by who wrote them and the failed check",
            ["generator", "reason"], registry=r)
        self.llm_calls = Counter(
            "poet_llm_calls_total", "Attempts to have Gemini write a version, by outcome", ["outcome"], registry=r)
        self.llm_requests = Counter(
            "poet_llm_requests_total", "Requests sent to Gemini (retries included)", registry=r)
        self.llm_fallbacks = Counter(
            "poet_llm_fallbacks_total", "Versions the template wrote because Gemini's could not be used, by reason",
            ["reason"], registry=r)
        self.regenerations = Counter(
            "poet_learning_regenerations_total", "New versions the learning loop made, by the pattern that fired",
            ["reason"], registry=r)

        self._state = _StateCollector()
        r.register(self._state)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- RPCs ----------------------------------------------------------------

    def method(self, grpc_type: str, full_method: str | None) -> MethodMetrics:
        """The series of an RPC method ("/package.Service/Method"); None for one the
        server does not serve, which counts as service and method "unknown"."""
        if full_method is None:
            key = (grpc_type, UNKNOWN, UNKNOWN)
        else:
            service, _, name = full_method.lstrip("/").partition("/")
            key = (grpc_type, service, name)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodMetrics(self, key)
        return found

    # -- enhancements ----------------------------------------------------------

    def enhancement_done(self, domain: str, ok: bool, seconds: float) -> None:
        """domain: a known domain, or "unknown" (the caller bounds it)."""
        self.enhancement_requests.labels(domain, "success" if ok else "error").inc()
        self.enhancement_duration.labels(domain).observe(seconds)

    # -- the event log -------------------------------------------------------

    def watch_log(self, positions: Callable[[], tuple[int, int]]) -> None:
        """positions() -> (first kept, last committed) positions of the log."""
        self._state.positions = positions

    def watch_store_file(self, path: str | os.PathLike) -> None:
        self._state.files = (Path(path), Path(f"{path}-wal"))

    def consumer_position(self, consumer: str, position: int) -> None:
        """A log consumer saved its durable position (its lag is read from this)."""
        self._state.consumers[consumer] = position

    def consumer_lease(self, consumer: str, held: bool) -> None:
        """The consumer runs here (held) or not: a consumer another replica runs has no lag here."""
        self.consumer_leases.labels(consumer).set(1 if held else 0)
        if not held:
            self._state.consumers.pop(consumer, None)

    # -- sinks ---------------------------------------------------------------

    def sink(self, name: str, breaker_state: Callable[[], str]) -> SinkMetrics:
        """The counters of the sink of that name (from the sinks file: bounded), whose
        breaker state ("closed", "open", "half_open") is read when scraped."""
        self._state.sink_breakers[name] = breaker_state
        return SinkMetrics(
            delivered=self.sink_deliveries.labels(name),
            failed_retryable=self.sink_failures.labels(name, "true"),
            failed_final=self.sink_failures.labels(name, "false"),
            retried=self.sink_retries.labels(name),
            dead_lettered=self.sink_dead_letters.labels(name),
        )

    # -- the generator -------------------------------------------------------

    def gate_checked(self, generator: str, seconds: float | None, rejected: str | None = None) -> None:
        """One gate verdict on a version written by generator ("template" or "gemini"):
        passed, or rejected by that check. seconds: None when it failed before timing began."""
        if seconds is not None:
            self.gate_duration.labels(generator).observe(seconds)
        if rejected is not None:
            self.gate_rejections.labels(generator, rejected if rejected in GATE_CHECKS else OTHER).inc()

    def llm_answered(self, outcome: str, requests: int) -> None:
        """outcome: one of the generator's LLMOutcome statuses (a fixed set)."""
        self.llm_calls.labels(outcome).inc()
        if requests:
            self.llm_requests.inc(requests)

    def watch_llm_breaker(self, state: Callable[[], str]) -> None:
        self._state.llm_breaker = state


class _StateCollector(Collector):
    """Gauges computed at scrape time from in-memory state."""

    def __init__(self) -> None:
        self.positions: Callable[[], tuple[int, int]] = lambda: (1, 0)
        self.files: tuple[Path, ...] = ()
        self.consumers: dict[str, int] = {}
        self.sink_breakers: dict[str, Callable[[], str]] = {}
        self.llm_breaker: Callable[[], str] | None = None

    def describe(self) -> Iterable[Metric]:
        # Names only, so that registering does not read the state.
        yield from self._families()

    def collect(self) -> Iterable[Metric]:
        oldest, newest = self.positions()
        events = max(0, newest - oldest + 1)
        log_events, log_oldest, log_newest, store_bytes, lag, sink_breakers, llm_breaker = self._families()
        log_events.add_metric([], events)
        log_oldest.add_metric([], oldest if events else 0)
        log_newest.add_metric([], newest)
        store_bytes.add_metric([], sum(_size(path) for path in self.files))
        for consumer, position in sorted(self.consumers.copy().items()):
            lag.add_metric([consumer], max(0, newest - position))
        for sink, state in sorted(self.sink_breakers.copy().items()):
            sink_breakers.add_metric([sink], BREAKER_VALUES.get(state(), 1.0))
        yield from (log_events, log_oldest, log_newest, store_bytes, lag, sink_breakers)
        if self.llm_breaker is not None:
            llm_breaker.add_metric([], BREAKER_VALUES.get(self.llm_breaker(), 1.0))
            yield llm_breaker

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("poet_event_log_events", "Events in the log (newest minus oldest position, plus one)"),
            GaugeMetricFamily("poet_event_log_oldest_position", "Position of the oldest event kept (0: empty log)"),
            GaugeMetricFamily("poet_event_log_newest_position", "Position of the newest event"),
            GaugeMetricFamily("poet_store_file_bytes", "Size of the SQLite database file and its write-ahead log"),
            GaugeMetricFamily("poet_event_consumer_lag_events",
                              "Newest log position minus the consumer's durable position", labels=["consumer"]),
            GaugeMetricFamily("poet_sink_breaker_state", "Sink circuit breaker: 0 closed, 0.5 half-open, 1 open",
                              labels=["sink"]),
            GaugeMetricFamily("poet_llm_breaker_state", "Gemini circuit breaker: 0 closed, 0.5 half-open, 1 open"),
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
