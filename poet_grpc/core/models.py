"""Domain objects shared by the core, the store and the generator.

Plain frozen dataclasses: no protobuf, no grpc. Times are UTC epoch seconds
(float) so they sort and index cheaply in SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Values of the REST API (seed 000); proto enums print the same names.
VERSION_ACTIVE = "active"
VERSION_DEPRECATED = "deprecated"
FEEDBACK_TYPES = ("performance", "error", "user", "system")


@dataclass(frozen=True, slots=True)  # slots: the live tail holds tens of thousands
class EventRecord:
    """One event of the log (seed 002 schema plus its log position)."""

    id: str
    type: str
    source: str
    timestamp: float
    payload: dict[str, Any] = field(default_factory=dict)
    correlation_id: str = ""
    causation_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    """Envelope: version (schema), service, environment; principal of the call that
    appended it; trace_id and span_id of the span it was appended in (while tracing)."""
    function_name: str = ""
    """Function the event concerns; "" for system-wide events."""
    position: int = 0
    """Position in the log; 0 until appended."""


@dataclass(frozen=True)
class AppendResult:
    """What appending one event did."""

    id: str
    position: int
    duplicate: bool
    """True when an event with this id was already logged (nothing appended)."""


@dataclass(frozen=True)
class EventFilter:
    """Selects events; empty fields match everything."""

    function_name: str = ""
    event_type: str = ""
    correlation_id: str = ""
    start_time: float | None = None
    """Inclusive lower bound on timestamp."""
    end_time: float | None = None
    """Exclusive upper bound on timestamp."""


@dataclass(frozen=True)
class VersionMetrics:
    """What is known of a version in the field.

    The rates and avg_duration are measured from function.execution events when
    there are any, else they are the latest values reported by feedback.
    """

    success_rate: float = 0.0
    avg_duration: float = 0.0
    """Milliseconds."""
    error_rate: float = 0.0
    feedback_count: int = 0
    avg_rating: float = 0.0
    rating_count: int = 0
    execution_count: int = 0
    failure_count: int = 0
    timeout_count: int = 0
    """Failed executions whose error was a TimeoutError."""
    transient_count: int = 0
    """Failed executions whose error was transient (connection errors, timeouts)."""
    drift_detections: int = 0
    """ml_monitoring: executions that reported drift.detected."""
    false_positives: int = 0
    """Detections judged not real (human validation, or retraining that did not help)."""
    confirmed_drifts: int = 0
    missed_drifts: int = 0
    """Real drifts (by human validation) the function did not detect."""

    @property
    def drift_validations(self) -> int:
        return self.false_positives + self.confirmed_drifts + self.missed_drifts

    @property
    def false_positive_rate(self) -> float:
        """False detections among the validated detections."""
        validated = self.false_positives + self.confirmed_drifts
        return self.false_positives / validated if validated else 0.0

    @property
    def missed_drift_rate(self) -> float:
        """Undetected drifts among the validated real drifts."""
        real = self.missed_drifts + self.confirmed_drifts
        return self.missed_drifts / real if real else 0.0


@dataclass(frozen=True)
class GeneratedCode:
    """What a generator produced for one function."""

    python: str
    dana: str = ""
    optimizations: tuple[str, ...] = ()
    safety_level: float = 0.0
    generator: str = "template"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnhancementSpec:
    """Everything a version is generated from; equal specs give equal versions."""

    function_name: str
    original_code: str
    domain: str = "base_reliability"
    optimize_for: str = "reliability"
    context: dict[str, Any] = field(default_factory=dict)
    """imports, dependencies, environment (seed 000 EnhanceRequest.context)."""
    dana_source: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """Parameters requested by the caller; they override the domain defaults."""
    module: str = ""
    """Dotted name of the module original_code is (context.module, e.g. "mypkg.text"):
    its relative imports resolve against that package, and the function's identity
    (its version history) is the module plus function_name. "" for a lone module."""

    @property
    def identity(self) -> str:
        """What the function's version history, quotas, events and requests are keyed by:
        "module.function_name" when module is set, else function_name."""
        return qualified_name(self.module, self.function_name)


def qualified_name(module: str, function_name: str) -> str:
    """A function's identity: its module plus its name ("mypkg.text.first"), or the
    name alone for a module-less function."""
    return f"{module}.{function_name}" if module else function_name


def split_identity(identity: str) -> tuple[str, str]:
    """(module, function_name) of an identity; ("", identity) when it has no module.
    Unambiguous: a function name never contains a dot."""
    module, _, name = identity.rpartition(".")
    return module, name


@dataclass(frozen=True)
class FunctionVersion:
    """A stored version of an enhanced function."""

    function_name: str
    version: str
    """"v1", "v2", ..."""
    number: int
    created_at: float
    status: str
    spec: EnhancementSpec
    code: GeneratedCode
    content_hash: str
    """Hash of the spec; a request with the same hash reuses this version."""
    parent_version: str = ""
    metrics: VersionMetrics = field(default_factory=VersionMetrics)
    current: bool = False
    update_reason: str = ""
    """Why the learning loop generated this version ("" for requested ones)."""
