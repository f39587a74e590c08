"""The learning policy's rules, at and around their limits."""

import dataclasses

import pytest

from poet_grpc.core import learning
from poet_grpc.core.models import EnhancementSpec, FunctionVersion, GeneratedCode, VersionMetrics

POLICY = learning.LearningPolicy()


def version(domain="base_reliability", params=None, parent="", **metrics) -> FunctionVersion:
    return FunctionVersion(
        function_name="f", version="v2" if parent else "v1", number=2 if parent else 1, created_at=0.0, status="active",
        spec=EnhancementSpec(function_name="f", original_code="def f(): pass", domain=domain),
        code=GeneratedCode(python="", params=params or {"max_retries": 3, "backoff_base_seconds": 0.1, "timeout_seconds": 30.0, "drift_threshold": 0.1}),
        content_hash="h", parent_version=parent, metrics=VersionMetrics(**metrics), current=True,
    )


def test_no_evidence_no_finding():
    assert learning.evaluate(version(), None, POLICY) is None


@pytest.mark.parametrize("count, failures, fires", [(19, 10, False), (20, 2, False), (20, 3, True)])
def test_error_rate_needs_enough_executions_and_must_exceed_the_limit(count, failures, fires):
    v = version(execution_count=count, failure_count=failures, error_rate=failures / count, success_rate=1 - failures / count)
    finding = learning.evaluate(v, None, POLICY)
    assert (finding is not None) == fires
    if fires:
        assert finding.pattern_type == "high_error_rate" and "over 20 executions" in finding.reason


def test_reported_metrics_count_only_without_executions_and_after_enough_reports():
    assert learning.evaluate(version(feedback_count=1, error_rate=0.5), None, POLICY) is None
    assert learning.evaluate(version(feedback_count=2, error_rate=0.5), None, POLICY).pattern_type == "high_error_rate"


@pytest.mark.parametrize("ratings, avg, fires", [(2, 1.0, False), (3, 2.5, False), (3, 2.4, True)])
def test_low_ratings(ratings, avg, fires):
    finding = learning.evaluate(version(rating_count=ratings, avg_rating=avg), None, POLICY)
    assert (finding is not None and finding.pattern_type == "low_user_rating") == fires


def test_duration_regression_against_the_parent():
    parent = version(execution_count=50, avg_duration=10.0)
    slow = version(parent="v1", execution_count=50, avg_duration=15.1, success_rate=1.0)
    assert learning.evaluate(slow, parent, POLICY).pattern_type == "duration_regression"
    assert learning.evaluate(dataclasses.replace(slow, metrics=VersionMetrics(execution_count=50, avg_duration=14.9, success_rate=1.0)), parent, POLICY) is None


def test_drift_rules_apply_to_ml_monitoring_only():
    noisy = dict(false_positives=2, confirmed_drifts=3)  # 40 % of 5 validated detections
    assert learning.evaluate(version("ml_monitoring", **noisy), None, POLICY).pattern_type == "threshold_too_sensitive"
    assert learning.evaluate(version("base_reliability", **noisy), None, POLICY) is None
    assert learning.evaluate(version("ml_monitoring", false_positives=1, confirmed_drifts=3), None, POLICY) is None  # 4 < 5
    missing = learning.evaluate(version("ml_monitoring", missed_drifts=1, confirmed_drifts=4), None, POLICY)
    assert missing.pattern_type == "missing_edge_case"  # 20 % > 10 %


def test_learned_parameters():
    fp = version("ml_monitoring", false_positives=4, confirmed_drifts=1)
    assert learning.learned_spec(fp, learning.evaluate(fp, None, POLICY)).config["drift_threshold"] == pytest.approx(0.18)
    missed = version("ml_monitoring", missed_drifts=3, confirmed_drifts=2)
    assert learning.learned_spec(missed, learning.evaluate(missed, None, POLICY)).config["drift_threshold"] == pytest.approx(0.07)
    flaky = version(execution_count=20, failure_count=10, transient_count=10, timeout_count=5, error_rate=0.5)
    spec = learning.learned_spec(flaky, learning.evaluate(flaky, None, POLICY))
    assert spec.config == {"max_retries": 5, "backoff_base_seconds": 0.2, "timeout_seconds": 60.0}
    assert spec.optimize_for == "reliability"
    broken = version(execution_count=20, failure_count=10, error_rate=0.5)
    assert learning.learned_spec(broken, learning.evaluate(broken, None, POLICY)).optimize_for == "safety"


def test_expected_impact_counts_what_the_new_threshold_silences():
    verdicts = [(0.12, "false_positive"), (0.3, "false_positive"), (0.15, "confirmed"), (0.9, "confirmed")]
    impact = learning.expected_impact(learning.Finding("threshold_too_sensitive", "", 4, 0.5, 0.3), verdicts, 0.2)
    assert impact == {"false_positive_reduction": 0.5, "accuracy_improvement": 0.0, "cost_reduction": 0.25}


@pytest.mark.parametrize(
    "score, p, severity",
    [(0.81, 0.009, "critical"), (0.81, 0.02, "high"), (0.51, 0.04, "high"), (0.51, 0.06, "medium"), (0.21, 0.5, "medium"), (0.2, 0.0, "low")],
)
def test_seed_severity_rule(score, p, severity):
    assert learning.alert_severity(score, p) == severity
