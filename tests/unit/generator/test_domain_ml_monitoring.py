"""ml_monitoring: drift statistics (KS, PSI, KL) against hand-computed values, and the
drift.detected / monitoring.completed events of an enhanced function."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import capture, code_of, enhanced

DOMAIN = "ml_monitoring"

DETECT = '''
def detect(reference: list[float], current: list[float]) -> float:
    """Mean shift of current vs reference."""
    return sum(current) / len(current) - sum(reference) / len(reference)
'''

SEED_DRIFT_KEYS = {
    "execution_id",
    "function_name",
    "model_name",
    "feature_name",
    "drift_score",
    "method",
    "statistical_significance",
    "data_characteristics",
}
SEED_COMPLETED_KEYS = {
    "execution_id",
    "function_name",
    "model_name",
    "features_monitored",
    "overall_health",
    "execution_time_ms",
    "resource_usage",
}


@pytest.fixture
def detect(load):
    return enhanced(load, DETECT, "detect", DOMAIN)


def _normal(seed: int, mean: float, n: int = 400) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, 1.0) for _ in range(n)]


# --- the statistics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "current", "expected"),
    [
        ([1, 2, 3], [4, 5, 6], 1.0),  # disjoint
        ([1, 2, 3, 4], [3, 4, 5, 6], 0.5),  # at x=2: F_ref 2/4, F_cur 0
        ([1, 1, 2], [1, 2, 2], 1 / 3),  # ties: at x=1, 2/3 vs 1/3
        ([1, 2, 3], [1, 2, 3], 0.0),
        ([0.5], [0.1, 0.2, 0.9, 1.0], 0.5),  # at x=0.2: 0 vs 2/4
    ],
)
def test_ks_statistic_by_hand(detect, reference, current, expected) -> None:
    assert detect._poet_ks_2samp(sorted(map(float, reference)), sorted(map(float, current))) == pytest.approx(expected)


def _kolmogorov_sf_series(lam: float) -> float:
    """2 * sum_{k>=1} (-1)**(k-1) exp(-2 k^2 lam^2), summed to 200 terms (converges for lam >= 0.2)."""
    return 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 201))


@pytest.mark.parametrize("lam", [0.3, 0.5, 0.8, 1.0, 1.17, 1.19, 1.36, 1.63, 2.0, 3.0])
def test_kolmogorov_survival_function_matches_the_series(detect, lam) -> None:
    assert detect._poet_kolmogorov_sf(lam) == pytest.approx(_kolmogorov_sf_series(lam), abs=1e-9)


def test_kolmogorov_known_values(detect) -> None:
    sf = detect._poet_kolmogorov_sf
    assert sf(1.0) == pytest.approx(0.2699996717, abs=1e-9)  # 1 - K(1) = 1 - 0.7300003283
    assert sf(1.3581) == pytest.approx(0.05, abs=1e-4)  # the classic 5% critical value
    assert sf(1.6276) == pytest.approx(0.01, abs=1e-4)  # and the 1% one
    assert sf(0.0) == 1.0 and sf(0.05) == pytest.approx(1.0) and sf(10.0) < 1e-80


def test_ks_p_value_uses_the_effective_sample_size(detect) -> None:
    # n = 100, m = 300: n m / (n + m) = 75; lambda = sqrt(75) * 0.2
    assert detect._poet_ks_pvalue(0.2, 100, 300) == pytest.approx(_kolmogorov_sf_series(math.sqrt(75) * 0.2), abs=1e-9)


def test_quantile_edges_match_statistics_quantiles_inclusive(detect) -> None:
    data = sorted(_normal(3, 0.0, 257))
    assert detect._poet_quantile_edges(data, 10) == pytest.approx(statistics.quantiles(data, n=10, method="inclusive"))
    assert detect._poet_quantile_edges([1.0, 1.0, 1.0, 2.0], 4) == [1.0, 1.25]  # duplicates dropped


def test_psi_and_kl_by_hand(detect) -> None:
    reference = [float(x) for x in range(1, 11)]  # 2 bins: the median cut is 5.5, 5 values each side
    current = [1.0] * 8 + [10.0] * 2  # 8 left of the cut, 2 right
    p = [5.5 / 11, 5.5 / 11]  # (count + 0.5) / (10 + 0.5 * 2)
    q = [8.5 / 11, 2.5 / 11]
    psi = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q))
    kl = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    assert detect._poet_psi_kl(reference, current, 2, 0.5) == pytest.approx((psi, kl))
    assert detect._poet_psi_kl(reference, list(reference), 10, 0.5) == pytest.approx((0.0, 0.0))


def test_empty_bins_are_smoothed_not_infinite(detect) -> None:
    psi, kl = detect._poet_psi_kl([0.0, 1.0, 2.0, 3.0], [100.0, 101.0], 4, 0.5)
    assert math.isfinite(psi) and math.isfinite(kl) and psi > kl > 0


# --- the events -------------------------------------------------------------------------


def test_drift_emits_drift_detected_and_monitoring_completed(detect) -> None:
    events = capture(detect)
    reference, current = _normal(1, 0.0), _normal(2, 1.0)
    result = detect.detect(reference, current)
    assert result == sum(current) / len(current) - sum(reference) / len(reference)  # unchanged
    assert [e[0] for e in events] == ["drift.detected", "monitoring.completed"]
    drift, completed = events[0][1], events[1][1]
    assert SEED_DRIFT_KEYS <= set(drift) and set(drift) - SEED_DRIFT_KEYS == {"statistics"}
    assert drift["function_name"] == "detect" and drift["model_name"] == "detect"
    assert drift["feature_name"] == "current" and drift["method"] == "ks_test"
    d = detect._poet_ks_2samp(sorted(reference), sorted(current))
    assert drift["drift_score"] == d == drift["statistics"]["ks_statistic"] > 0.3
    assert drift["statistical_significance"] == detect._poet_ks_pvalue(d, 400, 400) < 1e-6
    characteristics = {"sample_size": 400, "data_type": "continuous", "missing_values_percent": 0.0}
    assert drift["data_characteristics"] == characteristics
    assert set(completed) == SEED_COMPLETED_KEYS
    assert completed["execution_id"] == drift["execution_id"]
    assert events[0][2] == events[1][2] == {"correlation_id": drift["execution_id"]}
    assert completed["features_monitored"] == ["current"] and completed["overall_health"] == "unhealthy"
    assert completed["execution_time_ms"] >= 0
    assert set(completed["resource_usage"]) == {"memory_mb", "cpu_percent"}
    assert completed["resource_usage"]["memory_mb"] > 0
    assert detect.detect.poet_drift[-1]["drift_score"] == d


def test_no_drift_emits_only_monitoring_completed_healthy(detect) -> None:
    events = capture(detect)
    sample = _normal(5, 0.0)
    detect.detect(sample, list(sample))
    assert [e[0] for e in events] == ["monitoring.completed"]
    assert events[0][1]["overall_health"] == "healthy"
    assert detect.detect.poet_drift[-1]["drift_score"] == 0.0


def test_health_follows_the_thresholds(load) -> None:
    module = enhanced(load, DETECT, "detect", DOMAIN, drift_threshold=0.2, unhealthy_threshold=0.6)
    events = capture(module)
    module.detect([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])  # D = 0.5: degraded
    assert events[-1][1]["overall_health"] == "degraded" and events[0][0] == "drift.detected"
    events.clear()
    module.detect([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 6.0])  # D = 0.2
    assert events[0][1]["drift_score"] == pytest.approx(0.2) and events[-1][1]["overall_health"] == "degraded"
    events.clear()
    module.detect([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])  # D = 1
    assert events[-1][1]["overall_health"] == "unhealthy"


@pytest.mark.parametrize(("method", "key"), [("kl_divergence", "kl_divergence"), ("hybrid", None)])
def test_drift_method_chooses_the_score(load, method, key) -> None:
    module = enhanced(load, DETECT, "detect", DOMAIN, drift_method=method, model_name="churn", feature_name="activity")
    events = capture(module)
    module.detect(_normal(1, 0.0), _normal(2, 1.0))
    drift = events[0][1]
    stats = drift["statistics"]
    expected = stats[key] if key else max(stats["ks_statistic"], stats["psi"])
    assert drift["method"] == method and drift["drift_score"] == expected
    assert drift["model_name"] == "churn" and drift["feature_name"] == "activity"
    assert drift["statistical_significance"] == stats["ks_p_value"]


def test_missing_values_are_reported_and_left_out(load) -> None:
    source = "def compare(baseline, production):\n    return len(production)\n"
    module = enhanced(load, source, "compare", DOMAIN)
    events = capture(module)
    assert module.compare([1.0, 2.0, 3.0], [1.0, None, float("nan"), 9.0]) == 4
    drift = events[0][1]
    assert drift["feature_name"] == "production"
    characteristics = {"sample_size": 4, "data_type": "continuous", "missing_values_percent": 50.0}
    assert drift["data_characteristics"] == characteristics
    assert drift["statistics"]["current_size"] == 2


def test_non_numeric_samples_are_monitored_without_a_score(load) -> None:
    source = "def compare(expected, actual):\n    return expected == actual\n"
    module = enhanced(load, source, "compare", DOMAIN)
    events = capture(module)
    assert module.compare(["a", "b"], ["a", "c"]) is False
    assert [e[0] for e in events] == ["monitoring.completed"]
    assert events[0][1]["features_monitored"] == [] and events[0][1]["overall_health"] == "healthy"
    assert module.compare.poet_drift[-1]["drift_score"] is None


def test_the_first_two_numeric_sequence_parameters_are_the_samples(load) -> None:
    source = (
        "from typing import Sequence\n\n\n"
        "def shift(old: Sequence[float], recent: list[int], scale: float = 1.0) -> float:\n"
        "    return (sum(recent) - sum(old)) * scale\n"
    )
    assert "drift_detection" in code_of(source, "shift", DOMAIN).optimizations
    module = enhanced(load, source, "shift", DOMAIN)
    events = capture(module)
    assert module.shift((0.0, 0.1), [5, 6]) == 10.9
    assert events[0][1]["feature_name"] == "recent" and events[0][1]["drift_score"] == 1.0


def test_name_conventions_are_parameters(load) -> None:
    source = "def compare(before, after, other):\n    return 0\n"
    assert "drift_detection" not in code_of(source, "compare", DOMAIN).optimizations
    module = enhanced(load, source, "compare", DOMAIN, reference_params=["before"], current_params=["after"])
    events = capture(module)
    module.compare([1.0, 2.0], [1.0, 2.0], None)
    assert events[-1][1]["features_monitored"] == ["after"]


def test_failures_emit_nothing_and_propagate_unchanged(detect) -> None:
    events = capture(detect)
    with pytest.raises(ZeroDivisionError):
        detect.detect([1.0], [])
    assert events == []


def test_iterators_are_not_consumed(load) -> None:
    source = "def compare(reference, current):\n    return next(iter(current))\n"
    module = enhanced(load, source, "compare", DOMAIN)
    events = capture(module)
    current = iter([1.0, 2.0, 3.0])
    assert module.compare([1.0], current) == 1.0
    assert list(current) == [2.0, 3.0]
    assert events[0][1]["features_monitored"] == []


def test_a_failing_emitter_never_changes_the_result(detect) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("emitter down")

    detect._poet_emit = broken
    assert detect.detect([1.0, 2.0], [3.0, 4.0]) == 2.0


# --- where it does not apply ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "def scale(values: list[float], factor: float) -> list[float]:\n    return [v * factor for v in values]\n",
        "def total(l1: list, l2: list) -> int:\n    return len(l1) + len(l2)\n",
        "def count(n: int):\n    yield from range(n)\n",
    ],
)
def test_no_drift_code_where_no_samples_match(source) -> None:
    name = source.split("(")[0].removeprefix("def ")
    code = code_of(source, name, DOMAIN)
    assert "drift_detection" not in code.optimizations
    assert "_poet_monitor_drift" not in code.python


def test_generated_modules_pass_the_gate() -> None:
    for source, name in [(DETECT, "detect"), ("def compare(baseline, production):\n    return 1\n", "compare")]:
        check_generated(source, code_of(source, name, DOMAIN).python, name)
