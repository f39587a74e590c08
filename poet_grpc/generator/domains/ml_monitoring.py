"""ml_monitoring: drift detection on functions that compare two numeric samples.

Which parameters are the samples: the first parameter named like a reference sample
(`reference_params`, by the name convention of _conventions) and the first other one
named like a current sample (`current_params`); failing that, the first two parameters
annotated as a list/tuple/Sequence of int or float, the first taken as the reference.

After each successful call, the samples (as they are after the call) are compared:
two-sample Kolmogorov-Smirnov (statistic D and asymptotic p-value), PSI and KL
divergence over histogram bins cut at the reference's quantiles, with additive
smoothing. The function's result is returned unchanged; statistics never raise.
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import (
    is_number_type,
    literal,
    name_matches,
    sequence_element,
)
from poet_grpc.generator.domains._shared import EMIT
from poet_grpc.generator.domains._types import (
    DomainCode,
    DomainInfo,
    DomainParam,
    Parameter,
    Target,
    reliability_parameters,
)

DRIFT_DETECTION = "drift_detection"

STATISTICS = '''
import bisect
import math


def _poet_ks_2samp(reference, current):
    """Two-sample Kolmogorov-Smirnov statistic D = max |F_ref(x) - F_cur(x)| (both sorted,
    non-empty), in exact integer arithmetic (|i m - j n| / (n m)) until the final division."""
    n, m = len(reference), len(current)
    i = j = 0
    gap = 0
    while i < n and j < m:
        x = reference[i] if reference[i] <= current[j] else current[j]
        while i < n and reference[i] <= x:
            i += 1
        while j < m and current[j] <= x:
            j += 1
        step = abs(i * m - j * n)
        if step > gap:
            gap = step
    return gap / (n * m)


def _poet_kolmogorov_sf(lam):
    """P(K > lam) for the Kolmogorov distribution (the limit of sqrt(n) * D):
    2 * sum_k (-1)**(k-1) exp(-2 k**2 lam**2), or for lam < 1.18 the equivalent
    1 - sqrt(2 pi) / lam * sum_k exp(-(2k-1)**2 pi**2 / (8 lam**2)); 4 terms each."""
    if lam <= 0.0:
        return 1.0
    if lam < 1.18:
        y = math.exp(-math.pi * math.pi / (8.0 * lam * lam))
        p = 1.0 - math.sqrt(2.0 * math.pi) / lam * (y + y**9 + y**25 + y**49)
    else:
        x = math.exp(-2.0 * lam * lam)
        p = 2.0 * (x - x**4 + x**9 - x**16)
    return min(1.0, max(0.0, p))


def _poet_ks_pvalue(d, n, m):
    """Asymptotic two-sided p-value of D for samples of sizes n and m: P(K > sqrt(n m / (n + m)) * D)."""
    return _poet_kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


def _poet_quantile_edges(reference, bins):
    """Interior cut points at the reference's k/bins quantiles, k = 1..bins-1 (linear
    interpolation between order statistics, like statistics.quantiles(method="inclusive")
    and numpy's default), duplicates removed. `reference` is sorted and non-empty."""
    n = len(reference)
    edges = []
    for k in range(1, bins):
        h = (n - 1) * k / bins
        low = math.floor(h)
        high = min(low + 1, n - 1)
        edge = reference[low] + (h - low) * (reference[high] - reference[low])
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def _poet_proportions(values, edges, smoothing):
    """Smoothed share of values per bin (-inf, e1], (e1, e2], ..., (e_last, inf):
    (count + smoothing) / (len(values) + smoothing * bins)."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bisect.bisect_left(edges, value)] += 1
    total = len(values) + smoothing * len(counts)
    return [(c + smoothing) / total for c in counts]


def _poet_psi_kl(reference, current, bins, smoothing):
    """(PSI, KL(current || reference)) over bins cut at the reference's quantiles, natural log:
    PSI = sum (q - p) ln(q / p), KL = sum q ln(q / p), p the reference's and q the current
    sample's smoothed bin shares."""
    edges = _poet_quantile_edges(reference, bins)
    p = _poet_proportions(reference, edges, smoothing)
    q = _poet_proportions(current, edges, smoothing)
    psi = kl = 0.0
    for pi, qi in zip(p, q):
        if pi > 0.0 and qi > 0.0:
            ratio = math.log(qi / pi)
            psi += (qi - pi) * ratio
            kl += qi * ratio
    return psi, kl


def _poet_drift_statistics(reference, current, bins, smoothing):
    """Every drift statistic of two numeric samples (lists of finite floats, non-empty)."""
    reference = sorted(reference)
    current = sorted(current)
    d = _poet_ks_2samp(reference, current)
    psi, kl = _poet_psi_kl(reference, current, bins, smoothing)
    return {
        "ks_statistic": d,
        "ks_p_value": _poet_ks_pvalue(d, len(reference), len(current)),
        "psi": psi,
        "kl_divergence": kl,
        "reference_size": len(reference),
        "current_size": len(current),
    }
'''

MONITOR = '''
import array
import collections
import decimal
import numbers
import os
import sys
import time

try:
    import resource
except ImportError:  # not on Windows
    resource = None

_POET_DRIFT = collections.deque(maxlen=100)
"""The latest drift checks of the function, newest last; also <function>.poet_drift."""


def _poet_drift_sample(value):
    """The observations of a sample argument as a list, or None when it is not one read here:
    list, tuple, range, array.array, or a one-dimensional numpy array / pandas Series
    (through tolist()). Iterators are never read (that would consume them)."""
    if isinstance(value, (list, tuple, range, array.array)):
        return list(value)
    if type(value).__name__ in ("ndarray", "Series") and getattr(value, "ndim", None) == 1:
        items = value.tolist()
        return items if isinstance(items, list) else None
    return None


def _poet_profile(items):
    """(finite numbers as floats, missing count, data type) of a sample. None, NaN and
    infinite values are missing; bools, strings and other objects are categorical."""
    values = []
    missing = categorical = 0
    for item in items:
        if item is None:
            missing += 1
        elif isinstance(item, (numbers.Real, decimal.Decimal)) and not isinstance(item, bool):
            number = float(item)
            if math.isfinite(number):
                values.append(number)
            else:
                missing += 1
        else:
            categorical += 1
    if categorical and values:
        kind = "mixed"
    elif categorical:
        kind = "categorical"
    else:
        kind = "continuous"
    return values, missing, kind


def _poet_resource_usage(cpu_seconds, wall_seconds):
    """{memory_mb: the process's peak resident memory, cpu_percent: process CPU time (all
    threads) over the call's wall time}; zeros where the platform cannot tell."""
    memory = 0.0
    if resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        memory = peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    cpu = 100.0 * cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0
    return {"memory_mb": round(memory, 3), "cpu_percent": round(cpu, 1)}


def _poet_monitor_drift(reference, current, feature, started, cpu_started):
    """Compare the samples after a successful call; emit drift.detected when the drift score
    reaches drift_threshold, and always monitoring.completed. Observation only."""
    wall = _poet_clock() - started
    cpu = _poet_cpu_clock() - cpu_started
    params = _POET_PARAMS
    execution_id = os.urandom(16).hex()
    model = params["model_name"] or _POET_FUNCTION
    feature = params["feature_name"] or feature
    method = params["drift_method"]
    ref_items = _poet_drift_sample(reference)
    cur_items = _poet_drift_sample(current)
    statistics = None
    cur_missing, cur_kind, cur_size = 0, "continuous", 0
    if ref_items is not None and cur_items is not None:
        ref_values, _, ref_kind = _poet_profile(ref_items)
        cur_values, cur_missing, cur_kind = _poet_profile(cur_items)
        cur_size = len(cur_items)
        if ref_values and cur_values and ref_kind == cur_kind == "continuous":
            statistics = _poet_drift_statistics(ref_values, cur_values, params["psi_bins"], params["drift_smoothing"])
    score = None
    health = "healthy"
    if statistics is not None:
        if method == "ks_test":
            score = statistics["ks_statistic"]
        elif method == "kl_divergence":
            score = statistics["kl_divergence"]
        else:  # hybrid
            score = max(statistics["ks_statistic"], statistics["psi"])
        if score >= params["unhealthy_threshold"]:
            health = "unhealthy"
        elif score >= params["drift_threshold"]:
            health = "degraded"
    _POET_DRIFT.append(
        {
            "execution_id": execution_id,
            "feature_name": feature,
            "method": method,
            "drift_score": score,
            "statistics": statistics,
            "overall_health": health,
        }
    )
    if score is not None and score >= params["drift_threshold"]:
        _poet_domain_emit(
            "drift.detected",
            {
                "execution_id": execution_id,
                "function_name": _POET_IDENTITY,
                "model_name": model,
                "feature_name": feature,
                "drift_score": score,
                "method": method,
                "statistical_significance": statistics["ks_p_value"],
                "data_characteristics": {
                    "sample_size": cur_size,
                    "data_type": cur_kind,
                    "missing_values_percent": 100.0 * cur_missing / cur_size if cur_size else 0.0,
                },
                "statistics": dict(statistics),
            },
            correlation_id=execution_id,
        )
    _poet_domain_emit(
        "monitoring.completed",
        {
            "execution_id": execution_id,
            "function_name": _POET_IDENTITY,
            "model_name": model,
            "features_monitored": [feature] if statistics is not None else [],
            "overall_health": health,
            "execution_time_ms": wall * 1000.0,
            "resource_usage": _poet_resource_usage(cpu, wall),
        },
        correlation_id=execution_id,
    )
'''

REFERENCE_NAMES = ["reference", "baseline", "expected", "ref", "train", "training"]
CURRENT_NAMES = ["current", "actual", "production", "new", "live", "observed", "serving"]


def samples(target: Target) -> tuple[Parameter, Parameter] | None:
    """(reference, current) parameters, or None (see the module docstring)."""
    named = target.named
    reference = next((p for p in named if name_matches(p.name, target.params["reference_params"])), None)
    current = next(
        (p for p in named if p is not reference and name_matches(p.name, target.params["current_params"])), None
    )
    if reference is not None and current is not None:
        return reference, current
    numeric = [p for p in named if is_number_type(sequence_element(p.annotation, target), target)]
    if len(numeric) >= 2:
        return numeric[0], numeric[1]
    return None


def code(target: Target) -> DomainCode:
    pair = None if target.is_generator else samples(target)
    if pair is None:
        return DomainCode()
    reference, current = pair
    return DomainCode(
        runtime=(EMIT, STATISTICS, MONITOR),
        start=("_poet_started = _poet_started or _poet_clock()", "_poet_cpu_started = _poet_cpu_clock()"),
        on_success=(
            f"_poet_monitor_drift({reference.name}, {current.name}, {literal(current.name)}, "
            "_poet_started, _poet_cpu_started)",
        ),
        finish=(f"{target.name}.poet_drift = _POET_DRIFT",),
        features=(DRIFT_DETECTION,),
    )


DOMAIN = DomainInfo(
    name="ml_monitoring",
    description=(
        "Model and data monitoring. The base reliability stages with NaN or infinite floats rejected on "
        "float-annotated arguments and results, plus drift detection on functions that take a reference and "
        "a current numeric sample (named like reference/baseline/expected and current/actual/production/new, "
        "or the first two parameters annotated list/Sequence of int or float): after each successful call, "
        "two-sample Kolmogorov-Smirnov (D and asymptotic p-value), PSI and KL divergence (bins at the "
        "reference's quantiles, smoothed) of current vs reference; drift.detected is emitted when the drift "
        "score reaches drift_threshold, monitoring.completed always; the last 100 checks in "
        "<function>.poet_drift. The function's result is returned unchanged."
    ),
    parameters=reliability_parameters(reject_non_finite_floats=True)
    + (
        DomainParam(
            "drift_threshold",
            "Drift score at or above which drift.detected is emitted and health is at least 'degraded'. The "
            "drift score is the KS statistic D (0..1) for drift_method ks_test, KL(current || reference) for "
            "kl_divergence, max(D, PSI) for hybrid.",
            0.1,
            0.0,
        ),
        DomainParam(
            "unhealthy_threshold",
            "Drift score at or above which overall_health is 'unhealthy' (below drift_threshold: 'healthy', "
            "between: 'degraded').",
            0.25,
            0.0,
        ),
        DomainParam(
            "drift_method",
            "Which statistic is the drift score: ks_test, kl_divergence or hybrid. statistical_significance is "
            "the KS asymptotic p-value whatever the method; drift.detected also carries all statistics.",
            "ks_test",
            choices=("ks_test", "kl_divergence", "hybrid"),
        ),
        DomainParam("psi_bins", "Histogram bins for PSI and KL, cut at the reference's quantiles.", 10, 2, 1000),
        DomainParam(
            "drift_smoothing",
            "Additive smoothing of bin counts for PSI and KL: share = (count + s) / (n + s * bins), so an "
            "empty bin does not make the divergence infinite (must be > 0).",
            0.5,
            1e-9,
        ),
        DomainParam("model_name", "model_name of the events; empty: the function's name.", ""),
        DomainParam("feature_name", "feature_name of the events; empty: the current sample's parameter name.", ""),
        DomainParam(
            "reference_params",
            "Name convention of the reference sample parameter (an entry matches the name itself, entry_* and "
            "*_entry: baseline matches baseline_scores).",
            REFERENCE_NAMES,
        ),
        DomainParam("current_params", "Name convention of the current sample parameter.", CURRENT_NAMES),
    ),
    code=code,
)
