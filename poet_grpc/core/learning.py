"""The learning policy: when evidence says a version is failing, and what the next
version should change. Pure functions over a version's metrics; the learning loop
(core/learning_loop.py) applies them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from poet_grpc.core.models import EnhancementSpec, EventRecord, FunctionVersion

ML_MONITORING = "ml_monitoring"


@dataclass(frozen=True)
class LearningPolicy:
    """When a version is replaced. Defaults follow the seeds (POET_POLICY_* settings)."""

    min_executions: int = 20
    """Executions a version needs before its error/success rate or duration can condemn it."""
    max_error_rate: float = 0.1
    """error_rate above this (over min_executions) fires."""
    min_success_rate: float = 0.9
    """success_rate below this (over min_executions) fires."""
    min_reports: int = 2
    """Feedback reports needed before reported metrics (no executions known) can fire."""
    min_ratings: int = 3
    """Ratings needed before the average rating can fire."""
    min_avg_rating: float = 2.5
    """Average user rating (1-5) below this fires."""
    duration_regression: float = 0.5
    """avg_duration more than this fraction above the parent version's fires."""
    min_validations: int = 5
    """ml_monitoring: drift verdicts needed before the drift rates can fire."""
    max_false_positive_rate: float = 0.3
    """ml_monitoring: share of validated detections judged false above this fires (seed)."""
    max_missed_drift_rate: float = 0.1
    """ml_monitoring: share of real drifts missed above this fires (seed)."""


@dataclass(frozen=True)
class Finding:
    """Why a version should be replaced (a seed 002 learning pattern)."""

    pattern_type: str
    """threshold_too_sensitive, missing_edge_case, high_error_rate, low_user_rating, duration_regression."""
    reason: str
    """One sentence for people: the measured value and the limit it crossed."""
    sample_size: int
    rate: float
    """The measured value that crossed the limit."""
    limit: float


def evaluate(version: FunctionVersion, parent: FunctionVersion | None, policy: LearningPolicy) -> Finding | None:
    """The first policy rule the version's evidence breaks, or None."""
    m = version.metrics
    if version.spec.domain == ML_MONITORING:
        validated = m.false_positives + m.confirmed_drifts
        if validated >= policy.min_validations and m.false_positive_rate > policy.max_false_positive_rate:
            return Finding(
                "threshold_too_sensitive",
                f"false-positive rate {m.false_positive_rate:.0%} over {validated} validated detections exceeds {policy.max_false_positive_rate:.0%}",
                validated, m.false_positive_rate, policy.max_false_positive_rate,
            )
        real = m.missed_drifts + m.confirmed_drifts
        if real >= policy.min_validations and m.missed_drift_rate > policy.max_missed_drift_rate:
            return Finding(
                "missing_edge_case",
                f"missed-drift rate {m.missed_drift_rate:.0%} over {real} validated drifts exceeds {policy.max_missed_drift_rate:.0%}",
                real, m.missed_drift_rate, policy.max_missed_drift_rate,
            )
    enough = m.execution_count >= policy.min_executions or (m.execution_count == 0 and m.feedback_count >= policy.min_reports)
    measured = m.execution_count or m.feedback_count
    source = "executions" if m.execution_count else "reports"
    if enough and m.error_rate > policy.max_error_rate:
        return Finding(
            "high_error_rate",
            f"error rate {m.error_rate:.0%} over {measured} {source} exceeds {policy.max_error_rate:.0%}",
            measured, m.error_rate, policy.max_error_rate,
        )
    if enough and 0 < m.success_rate < policy.min_success_rate:
        return Finding(
            "high_error_rate",
            f"success rate {m.success_rate:.0%} over {measured} {source} is below {policy.min_success_rate:.0%}",
            measured, m.success_rate, policy.min_success_rate,
        )
    if m.rating_count >= policy.min_ratings and m.avg_rating < policy.min_avg_rating:
        return Finding(
            "low_user_rating",
            f"average rating {m.avg_rating:.1f} over {m.rating_count} ratings is below {policy.min_avg_rating:g}",
            m.rating_count, m.avg_rating, policy.min_avg_rating,
        )
    if (
        parent is not None
        and m.execution_count >= policy.min_executions
        and parent.metrics.execution_count >= policy.min_executions
        and parent.metrics.avg_duration > 0
        and m.avg_duration > parent.metrics.avg_duration * (1 + policy.duration_regression)
    ):
        slower = m.avg_duration / parent.metrics.avg_duration - 1
        return Finding(
            "duration_regression",
            f"average duration {m.avg_duration:.1f} ms is {slower:.0%} above {parent.version}'s {parent.metrics.avg_duration:.1f} ms",
            m.execution_count, slower, policy.duration_regression,
        )
    return None


def learned_spec(version: FunctionVersion, finding: Finding) -> EnhancementSpec:
    """The spec of the next version: the current parameters adjusted to the finding.

    The template generator learns through parameters (they become the new version's
    config, overriding domain defaults); the Gemini path also gets the evidence.
    """
    params = version.code.params
    config = dict(version.spec.config)
    optimize_for = version.spec.optimize_for
    m = version.metrics
    if finding.pattern_type == "threshold_too_sensitive":
        current = float(params.get("drift_threshold", 0.1))
        config["drift_threshold"] = round(min(1.0, current * max(1.25, 1 + m.false_positive_rate)), 4)
    elif finding.pattern_type == "missing_edge_case":
        current = float(params.get("drift_threshold", 0.1))
        config["drift_threshold"] = round(max(0.001, current * 0.7), 4)
    elif finding.pattern_type == "high_error_rate":
        failures = m.failure_count
        if failures == 0 or m.transient_count * 2 >= failures:
            # Failures the enhanced function can ride out: retry more, back off longer.
            config["max_retries"] = min(int(params.get("max_retries", 3)) + 2, 8)
            config["backoff_base_seconds"] = round(min(float(params.get("backoff_base_seconds", 0.1)) * 2, 5.0), 4)
        if failures and m.timeout_count * 3 >= failures:
            config["timeout_seconds"] = round(min(float(params.get("timeout_seconds", 30.0)) * 2, 600.0), 3)
        if failures and m.transient_count * 2 < failures:
            optimize_for = "safety"  # bad inputs, not flaky dependencies: check them strictly
    elif finding.pattern_type == "low_user_rating":
        optimize_for = "safety"
    elif finding.pattern_type == "duration_regression":
        optimize_for = "performance"
    return dataclasses.replace(version.spec, config=config, optimize_for=optimize_for)


def evidence(
    version: FunctionVersion, finding: Finding, suggestions: list[str], violations: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """What the Gemini prompt is told about the version's life in the field. `violations`:
    the version's function.contract_violation reports (arguments or results its annotations
    do not allow, observed and let through), which say where the annotations are narrower
    than the code's real use."""
    m = version.metrics
    found = {
        "version": version.version,
        "finding": finding.pattern_type,
        "reason": finding.reason,
        "metrics": {
            "execution_count": m.execution_count,
            "success_rate": m.success_rate,
            "error_rate": m.error_rate,
            "avg_duration_ms": m.avg_duration,
            "timeouts": m.timeout_count,
            "transient_failures": m.transient_count,
            "avg_rating": m.avg_rating,
            "false_positive_rate": m.false_positive_rate,
            "missed_drift_rate": m.missed_drift_rate,
        },
        "suggestions": suggestions,
    }
    if violations:
        found["contract_violations"] = violations
    return found


CONTRACT_VIOLATION = "function.contract_violation"
MAX_VIOLATIONS = 20
"""Most contract violations handed to a regeneration as evidence."""


def contract_violations(events: list[EventRecord], version: str) -> list[dict[str, str]]:
    """The distinct (parameter, expected, type seen) reports of `version` among
    function.contract_violation events, oldest first, at most MAX_VIOLATIONS. Fields are
    cut to 200 characters: the events come from the field, not from POET."""
    seen: list[dict[str, str]] = []
    for event in events:
        payload = event.payload
        if event.type != CONTRACT_VIOLATION or str(payload.get("version") or "") != version:
            continue
        report = {key: str(payload.get(key) or "")[:200] for key in ("parameter", "expected", "type_seen")}
        if report not in seen:
            seen.append(report)
            if len(seen) == MAX_VIOLATIONS:
                break
    return seen


def expected_impact(finding: Finding, verdicts: list[tuple[float, str]], new_threshold: float | None) -> dict[str, float]:
    """seed 002 enhancement.regenerated expected_impact, estimated from the evidence:
    for a threshold change, the validated detections the new threshold would have
    silenced (false ones are the gain, confirmed ones the loss)."""
    if new_threshold is None or not verdicts:
        return {"false_positive_reduction": 0.0, "accuracy_improvement": 0.0, "cost_reduction": 0.0}
    false = [score for score, verdict in verdicts if verdict == "false_positive"]
    confirmed = [score for score, verdict in verdicts if verdict == "confirmed"]
    silenced_false = sum(1 for score in false if score < new_threshold)
    lost_real = sum(1 for score in confirmed if score < new_threshold)
    validated = len(false) + len(confirmed)
    return {
        "false_positive_reduction": round(silenced_false / len(false), 4) if false else 0.0,
        "accuracy_improvement": round((silenced_false - lost_real) / validated, 4) if validated else 0.0,
        "cost_reduction": round(silenced_false / validated, 4) if validated else 0.0,
    }


def alert_severity(drift_score: float, significance: float) -> str:
    """seed 002 MLMonitoringEventHandlers._calculate_severity."""
    if drift_score > 0.8 and significance < 0.01:
        return "critical"
    if drift_score > 0.5 and significance < 0.05:
        return "high"
    if drift_score > 0.2:
        return "medium"
    return "low"


def business_impact(rate: float) -> str:
    return "high" if rate > 0.5 else "medium" if rate > 0.3 else "low"


def retraining_helped(payload: dict[str, Any]) -> bool:
    """feedback.model_retrained: the reporter's improvement_confirmed, else whether
    performance_after beats performance_before."""
    helped = payload.get("improvement_confirmed")
    if helped is None:
        helped = float(payload.get("performance_after") or 0) > float(payload.get("performance_before") or 0)
    return bool(helped)
