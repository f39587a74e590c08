"""The enhanced function behaves like the original for valid input, plus the four stages."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time

import pytest

FAST = {"backoff_base_seconds": 0.001, "backoff_max_seconds": 0.01, "jitter": 0.0}
"""Config that makes retry delays tiny."""

# name -> (source, function name, calls as (args, kwargs))
REAL_WORLD: dict[str, tuple[str, str, list[tuple[tuple, dict]]]] = {
    "slugify": (
        'import re\nimport unicodedata\n\n_NON_WORD = re.compile(r"[^a-z0-9]+")\n\n\n'
        'def slugify(text: str, sep: str = "-", max_length: int | None = None) -> str:\n'
        '    """URL slug of a title."""\n'
        '    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()\n'
        "    slug = _NON_WORD.sub(sep, ascii_text.lower()).strip(sep)\n"
        "    return slug[:max_length] if max_length else slug\n",
        "slugify",
        [(("Hello, World!",), {}), (("Crème brûlée à la carte",), {"sep": "_"}), (("a b c d e f",), {"max_length": 5})],
    ),
    "word_frequencies": (
        "from collections import Counter\nimport re\n\n"
        "def word_frequencies(text: str, top: int = 3) -> dict[str, int]:\n"
        "    words = re.findall(r\"[a-z']+\", text.lower())\n"
        "    return dict(Counter(words).most_common(top))\n",
        "word_frequencies",
        [(("the cat and the hat and the bat",), {}), (("",), {"top": 1})],
    ),
    "summarize": (
        "import statistics\n\n"
        "def summarize(values: list[float]) -> dict:\n"
        "    return {\n"
        '        "mean": statistics.fmean(values),\n'
        '        "median": statistics.median(values),\n'
        '        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,\n'
        "    }\n",
        "summarize",
        [(([1.0, 2.0, 4.0, 8.0],), {}), (([3],), {})],
    ),
    "fibonacci": (
        "def _step(pair):\n    a, b = pair\n    return b, a + b\n\n\n"
        "def fibonacci(n: int) -> int:\n"
        "    if n < 2:\n        return n\n"
        "    return fibonacci(n - 1) + fibonacci(n - 2)\n",
        "fibonacci",
        [((0,), {}), ((1,), {}), ((15,), {})],
    ),
    "parse_config": (
        "import json\n\nDEFAULTS = {\"retries\": 3, \"verbose\": False}\n\n\n"
        "def parse_config(raw: str, overrides: dict | None = None) -> dict:\n"
        "    config = dict(DEFAULTS)\n"
        "    config.update(json.loads(raw))\n"
        "    config.update(overrides or {})\n"
        "    return config\n",
        "parse_config",
        [(('{"retries": 5}',), {}), (("{}",), {"overrides": {"verbose": True}})],
    ),
    "haversine": (
        "import math\n\nEARTH_RADIUS_KM = 6371.0088\n\n\n"
        "def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:\n"
        "    p1, p2 = math.radians(lat1), math.radians(lat2)\n"
        "    dp, dl = p2 - p1, math.radians(lon2 - lon1)\n"
        "    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2\n"
        "    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))\n",
        "haversine",
        [((48.8566, 2.3522, 51.5074, -0.1278), {}), ((0, 0, 0, 0), {})],
    ),
    "price_with_tax": (
        'TAX_RATES = {"EU": 0.2, "US": 0.07, "JP": 0.1}\n\n\n'
        'def price_with_tax(amount: float, region: str = "EU", *, round_to: int = 2) -> float:\n'
        "    return round(amount * (1 + TAX_RATES[region]), round_to)\n",
        "price_with_tax",
        [((100,), {}), ((19.99, "US"), {}), ((5.5,), {"region": "JP", "round_to": 0})],
    ),
    "build_query": (
        "def build_query(table: str, *columns: str, limit: int | None = None, **filters) -> str:\n"
        '    cols = ", ".join(columns) or "*"\n'
        '    sql = f"SELECT {cols} FROM {table}"\n'
        "    if filters:\n"
        '        sql += " WHERE " + " AND ".join(f"{k} = {v!r}" for k, v in sorted(filters.items()))\n'
        "    if limit is not None:\n"
        '        sql += f" LIMIT {limit}"\n'
        "    return sql\n",
        "build_query",
        [(("users",), {}), (("users", "id", "name"), {"limit": 10, "active": True, "team": "a"})],
    ),
    "midpoint": (
        "from dataclasses import dataclass\n\n\n"
        "@dataclass(frozen=True)\nclass Point:\n    x: float\n    y: float\n\n\n"
        "def midpoint(a: Point, b: Point) -> Point:\n"
        "    return Point((a.x + b.x) / 2, (a.y + b.y) / 2)\n",
        "midpoint",
        [],  # called with the module's own Point below
    ),
    "top_k": (
        "def top_k(scores: dict[str, float], k: int = 3) -> list[str]:\n"
        "    return [name for name, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]\n",
        "top_k",
        [(({"a": 0.5, "b": 0.9, "c": 0.9, "d": 0.1},), {}), (({"x": 1},), {"k": 0})],
    ),
    "chunks": (
        "from typing import Iterator\n\n"
        "def chunks(items: list, size: int) -> Iterator[list]:\n"
        "    for start in range(0, len(items), size):\n"
        "        yield items[start:start + size]\n",
        "chunks",
        [(([1, 2, 3, 4, 5], 2), {})],
    ),
    "normalize": (
        "def normalize(text: str, lower: bool = True, collapse: bool = True) -> str:\n"
        "    if collapse:\n        text = ' '.join(text.split())\n"
        "    return text.lower() if lower else text\n",
        "normalize",
        [(("  Hello   WORLD ",), {}), (("A  B",), {"lower": False, "collapse": False})],
    ),
}


def _call(fn, args, kwargs):
    result = fn(*args, **kwargs)
    if hasattr(result, "__next__"):
        return ("generator", list(result))
    return result


@pytest.mark.parametrize("optimize_for", ["reliability", "safety", "performance"])
@pytest.mark.parametrize("case", sorted(REAL_WORLD))
def test_same_results_as_the_original(case: str, optimize_for: str, enhance) -> None:
    source, name, calls = REAL_WORLD[case]
    original_module, module = enhance(source, name, optimize_for=optimize_for)
    original, enhanced = getattr(original_module, name), getattr(module, name)
    if case == "midpoint":
        assert enhanced(module.Point(0, 0), module.Point(2, 4)) == module.Point(1, 2)
        assert original(original_module.Point(0, 0), original_module.Point(2, 4)) == original_module.Point(1, 2)
    for args, kwargs in calls:
        assert _call(enhanced, args, kwargs) == _call(original, args, kwargs)
    assert enhanced.poet_metrics["failures"] == 0


def test_async_results_match(enhance) -> None:
    source = (
        "import asyncio\n\n"
        "async def total(prices: list[float], discount: float = 0.0) -> float:\n"
        "    await asyncio.sleep(0)\n"
        "    return round(sum(prices) * (1 - discount), 2)\n"
    )
    original_module, module = enhance(source, "total")
    for args in (([1.5, 2.5],), ([10, 20], 0.1)):
        assert asyncio.run(module.total(*args)) == asyncio.run(original_module.total(*args))


# --- exceptions ---------------------------------------------------------------

RAISING = '''
class QuotaExceeded(Exception):
    pass


ERROR = KeyError("missing")


def lookup(table: dict, key: str):
    if key == "quota":
        raise QuotaExceeded(key)
    if key == "shared":
        raise ERROR
    return table[key]


async def alookup(table: dict, key: str):
    return lookup(table, key)
'''


def test_exceptions_from_the_original_propagate_unchanged(enhance) -> None:
    _, module = enhance(RAISING, "lookup")
    with pytest.raises(module.QuotaExceeded):
        module.lookup({}, "quota")
    with pytest.raises(KeyError) as caught:
        module.lookup({}, "shared")
    assert caught.value is module.ERROR
    with pytest.raises(KeyError, match="'other'"):
        module.lookup({}, "other")
    assert module.lookup.poet_metrics["failures"] == 3
    assert module.lookup.poet_metrics["last_error"] == "KeyError"


def test_async_exceptions_propagate_unchanged(enhance) -> None:
    _, module = enhance(RAISING, "alookup")
    with pytest.raises(KeyError) as caught:
        asyncio.run(module.alookup({}, "shared"))
    assert caught.value is module.ERROR


# --- Operate: retries ------------------------------------------------------------

FLAKY = '''
import asyncio

ATTEMPTS = []
RAISED = []


def flaky(x: int, failures: int = 2) -> int:
    ATTEMPTS.append(x)
    if len(ATTEMPTS) <= failures:
        RAISED.append(ConnectionResetError(f"attempt {len(ATTEMPTS)}"))
        raise RAISED[-1]
    return x * 2


def broken(x: int) -> int:
    ATTEMPTS.append(x)
    raise ValueError("not transient")


def missing_file(path: str) -> str:
    ATTEMPTS.append(path)
    with open(path) as f:
        return f.read()


async def aflaky(x: int, failures: int = 2) -> int:
    ATTEMPTS.append(x)
    await asyncio.sleep(0)
    if len(ATTEMPTS) <= failures:
        RAISED.append(TimeoutError(f"attempt {len(ATTEMPTS)}"))
        raise RAISED[-1]
    return x * 2
'''


@pytest.mark.parametrize("timeout", [0, 5])
def test_transient_failures_are_retried_then_succeed(timeout: float, enhance) -> None:
    _, module = enhance(FLAKY, "flaky", config={**FAST, "timeout_seconds": timeout})
    assert module.flaky(21) == 42
    assert module.ATTEMPTS == [21, 21, 21]
    metrics = module.flaky.poet_metrics
    assert (metrics["calls"], metrics["successes"], metrics["retries"], metrics["failures"]) == (1, 1, 2, 0)


def test_after_the_last_retry_the_last_transient_error_propagates(enhance) -> None:
    _, module = enhance(FLAKY, "flaky", config={**FAST, "max_retries": 2})
    with pytest.raises(ConnectionResetError) as caught:
        module.flaky(1, failures=10)
    assert len(module.ATTEMPTS) == 3
    assert caught.value is module.RAISED[-1]


def test_async_transient_failures_are_retried(enhance) -> None:
    _, module = enhance(FLAKY, "aflaky", config=FAST)
    assert asyncio.run(module.aflaky(5)) == 10
    assert len(module.ATTEMPTS) == 3
    module.ATTEMPTS.clear()
    with pytest.raises(TimeoutError) as caught:  # the original's own TimeoutError, unchanged
        asyncio.run(module.aflaky(5, failures=10))
    assert caught.value is module.RAISED[-1]
    assert len(module.ATTEMPTS) == 4


@pytest.mark.parametrize("function", ["broken", "missing_file"])
def test_non_transient_errors_are_not_retried(function: str, enhance, tmp_path) -> None:
    _, module = enhance(FLAKY, function, config=FAST)
    error = ValueError if function == "broken" else FileNotFoundError
    with pytest.raises(error):
        getattr(module, function)(1 if function == "broken" else str(tmp_path / "absent.txt"))
    assert len(module.ATTEMPTS) == 1
    assert getattr(module, function).poet_metrics["retries"] == 0


def test_retries_are_off_when_max_retries_is_zero(enhance) -> None:
    _, module = enhance(FLAKY, "flaky", config={**FAST, "retries": 0})
    with pytest.raises(ConnectionResetError):
        module.flaky(1)
    assert len(module.ATTEMPTS) == 1


def test_jitter_leaves_the_global_random_state_alone(enhance) -> None:
    _, module = enhance(FLAKY, "flaky", config={**FAST, "jitter": 1.0})
    random.seed(1234)
    expected = [random.random() for _ in range(3)]
    random.seed(1234)
    assert module.flaky(3) == 6  # two retries, each drawing jitter
    assert [random.random() for _ in range(3)] == expected


# --- Operate: timeout ---------------------------------------------------------------

SLOW = '''
import asyncio
import threading
import time


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


async def aslow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def where() -> str:
    return threading.current_thread().name
'''


def test_a_hard_sync_timeout_raises_timeout_error(enhance) -> None:
    _, module = enhance(SLOW, "slow", config={"timeout_seconds": 0.2, "hard_timeout": True})
    assert module.slow(0) == "done"
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"slow\(\) did not finish within 0.2 s"):
        module.slow(1.0)
    assert time.perf_counter() - started < 0.9
    assert module.slow.poet_metrics["timeouts"] == 1
    assert module.slow.poet_metrics["retries"] == 0  # our own deadline is not retried


def test_async_timeout_raises_timeout_error(enhance) -> None:
    _, module = enhance(SLOW, "aslow", config={"timeout_seconds": 0.2})
    assert asyncio.run(module.aslow(0)) == "done"
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="did not finish within"):
        asyncio.run(module.aslow(5))
    assert time.perf_counter() - started < 1.0
    assert module.aslow.poet_metrics["timeouts"] == 1


def test_sync_calls_run_in_the_callers_thread_unless_a_hard_timeout_is_asked_for(enhance) -> None:
    _, default = enhance(SLOW, "where")
    _, hard = enhance(SLOW, "where", config={"timeout_seconds": 5, "hard_timeout": True})
    assert default.where.poet_params["timeout_seconds"] > 0  # a deadline is set by default
    assert default.where() == threading.current_thread().name
    assert hard.where() == "poet-where"  # the documented trade-off: a worker thread


def test_a_soft_sync_deadline_stops_retries_not_the_call(enhance) -> None:
    source = (
        "import time\n\nCALLS = []\n\n\ndef flaky() -> str:\n"
        "    CALLS.append(time.monotonic())\n    time.sleep(0.05)\n    raise ConnectionError('down')\n"
    )
    _, module = enhance(source, "flaky", config={"timeout_seconds": 0.3, "max_retries": 20,
                                                  "backoff_base_seconds": 0.1, "backoff_multiplier": 1.0,
                                                  "jitter": 0.0})
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        module.flaky()
    # No retry starts that would end past the deadline: far fewer than 20 retries, well under 1 s.
    assert 1 < len(module.CALLS) < 6
    assert time.monotonic() - started < 1.0


# --- Perceive and Enforce: type checks -----------------------------------------------

TYPED = '''
from typing import Any, Callable, Optional, Union

CALLS = []


def area(width: int, height: float, label: Optional[str] = None, *, exact: bool = False) -> float:
    CALLS.append(width)
    return width * height


def pick(value: Union[int, str], fallback: "list | None" = None, hook: Callable[[int], int] = None, extra: Any = None):
    return value


def total(*amounts: int, **weights: float) -> float:
    return sum(amounts) * sum(weights.values() or [1])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def scale(x: float) -> float:
    return x * 2


def wrong(x) -> int:
    return str(x)


def nothing(x) -> None:
    return x

'''

SHADOWED = '''
import decimal

float = decimal.Decimal  # the module rebinds `float`: its annotations mean Decimal


def money(amount: float) -> float:
    return amount
'''


def test_arguments_of_the_wrong_type_are_rejected_naming_the_parameter(enhance) -> None:
    _, module = enhance(TYPED, "area")
    cases = [
        ((True, 3), "'width' must be int, not bool"),
        (("2", 3), "'width' must be int, not str"),
        ((2, "3"), "'height' must be float, not str"),
        ((2, False), "'height' must be float, not bool"),
        ((2, 3, 5), "'label' must be Optional[str], not int"),
    ]
    for args, message in cases:
        with pytest.raises(TypeError, match=re.escape(message)):
            module.area(*args)
    with pytest.raises(TypeError, match="'exact' must be bool, not int"):
        module.area(2, 3, exact=1)
    assert module.CALLS == []  # rejected before the original ran, and never retried
    assert module.area.poet_metrics["rejected_inputs"] == 6


def test_valid_arguments_are_accepted(enhance) -> None:
    from fractions import Fraction

    _, module = enhance(TYPED, "area")
    assert module.area(2, 3) == 6  # int where float is annotated
    assert module.area(2, 1.5, "x", exact=True) == 3.0
    assert module.area(2, Fraction(1, 2), None) == 1
    assert module.area(width=4, height=0.5) == 2.0


def test_unions_and_unknown_annotations(enhance) -> None:
    _, module = enhance(TYPED, "pick")
    assert module.pick(1) == 1 and module.pick("a") == "a"
    with pytest.raises(TypeError, match="not bool"):  # a bool is not taken for an int, in unions too
        module.pick(True)
    with pytest.raises(TypeError, match="'value' must be Union\\[int, str\\], not float"):
        module.pick(1.5)
    with pytest.raises(TypeError, match="'fallback' must be 'list \\| None', not str"):
        module.pick(1, fallback="ab")  # text where a list is annotated: clearly wrong
    assert module.pick(1, fallback=(1,)) == 1  # any other iterable works where a list is annotated
    with pytest.raises(TypeError, match=r"'hook' must be Callable\[\[int\], int\], not object"):
        module.pick(1, hook=object())
    assert module.pick(1, fallback=None, hook=len, extra=object()) == 1  # Any: no check
    assert module.pick(1, hook=None) == 1  # the default None is accepted (implicit Optional)


def test_var_positional_and_var_keyword_items_are_checked(enhance) -> None:
    _, module = enhance(TYPED, "total")
    assert module.total(1, 2, a=0.5, b=1) == 4.5
    with pytest.raises(TypeError, match=r"'\*amounts' must be int, not str"):
        module.total(1, "2")
    with pytest.raises(TypeError, match="'heavy' must be float, not str"):
        module.total(1, heavy="x")


def test_a_builtin_name_the_module_rebinds_is_not_checked(enhance) -> None:
    import decimal

    _, module = enhance(SHADOWED, "money")
    assert module.money(decimal.Decimal("1.5")) == decimal.Decimal("1.5")


def test_results_are_checked_against_the_return_annotation(enhance) -> None:
    _, module = enhance(TYPED, "wrong")
    with pytest.raises(TypeError, match=r"wrong\(\) must return int, not str"):
        module.wrong(3)
    assert module.wrong.poet_metrics["rejected_outputs"] == 1
    _, module = enhance(TYPED, "nothing")
    assert module.nothing(None) is None
    with pytest.raises(TypeError, match="must return None, not int"):
        module.nothing(1)


def test_checks_are_off_when_disabled(enhance) -> None:
    _, module = enhance(TYPED, "wrong", config={"validate_outputs": False})
    assert module.wrong(3) == "3"
    _, module = enhance(TYPED, "area", config={"validate_inputs": False, "validate_outputs": False})
    assert module.area("ab", 2) == "abab"


def test_safety_checks_container_elements_and_finite_floats(enhance) -> None:
    _, reliable = enhance(TYPED, "mean")
    _, safe = enhance(TYPED, "mean", optimize_for="safety")
    assert safe.mean([1, 2.5]) == reliable.mean([1, 2.5]) == 1.75
    with pytest.raises(TypeError, match="'values' must be list\\[float\\], not list"):
        safe.mean([1.0, "2"])
    with pytest.raises(TypeError, match="unsupported operand"):  # the original's own error
        reliable.mean([1.0, "2"])
    _, reliable = enhance(TYPED, "scale")
    _, safe = enhance(TYPED, "scale", optimize_for="safety")
    assert reliable.scale(float("inf")) == float("inf")
    with pytest.raises(ValueError, match="argument 'x' must be a finite number, not nan"):
        safe.scale(float("nan"))
    with pytest.raises(ValueError, match="result must be a finite number, not inf"):
        safe.scale(1e308)


# --- Train: metrics, and recursion ------------------------------------------------------


def test_poet_metrics_count_calls_outcomes_and_time(enhance) -> None:
    _, module = enhance(RAISING, "lookup")
    table = {"a": 1}
    for _ in range(3):
        assert module.lookup(table, "a") == 1
    with pytest.raises(KeyError):
        module.lookup(table, "b")
    with pytest.raises(TypeError):
        module.lookup(table, 5)  # Perceive: key must be str
    metrics = module.lookup.poet_metrics
    assert metrics["calls"] == 5
    assert metrics["successes"] == 3
    assert metrics["failures"] == 2
    assert metrics["rejected_inputs"] == 1
    assert metrics["last_error"] == "TypeError"
    assert metrics["total_duration_seconds"] == 0.0  # measured only when events are configured
    assert module.lookup.poet_params["max_retries"] == 3


def test_recursive_calls_are_calls_of_the_enhanced_function_without_nested_retries(enhance) -> None:
    source, name, _ = REAL_WORLD["fibonacci"]
    _, module = enhance(source, name, config={"timeout_seconds": 5})
    assert module.fibonacci(20) == 6765
    assert module.fibonacci.poet_metrics["calls"] == 21891  # every level is a call, as in the original
    deep = (
        "ATTEMPTS = []\n\n\ndef walk(n: int) -> int:\n    ATTEMPTS.append(n)\n"
        "    if n == 0:\n        raise ConnectionError('leaf down')\n    return walk(n - 1)\n"
    )
    _, walker = enhance(deep, "walk", config={"max_retries": 2, "backoff_base_seconds": 0.0, "jitter": 0.0})
    with pytest.raises(ConnectionError):
        walker.walk(3)
    # The innermost call retries (2), then each outer level once more without nested retries:
    # far fewer than nested retries at every level would make ((retries + 1) ** levels).
    assert len(walker.ATTEMPTS) < 3 ** 4


def test_concurrent_calls_are_all_counted(enhance) -> None:
    _, module = enhance(TYPED, "scale", config={"timeout_seconds": 0})
    threads = [threading.Thread(target=lambda: [module.scale(1.0) for _ in range(200)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert module.scale.poet_metrics["calls"] == module.scale.poet_metrics["successes"] == 800


@pytest.mark.parametrize("domain", ["base_reliability", "financial_services", "healthcare", "security", "ml_monitoring"])
def test_a_caller_patching_the_clock_keeps_every_value_it_feeds(domain, enhance, monkeypatch) -> None:
    # funcy's throttle tests feed time.time a fixed series: an enhanced call (audit trail,
    # metrics, drift monitoring) must not take values from it.
    source = (
        "import time\n\n"
        "def stamp(reference: list[float], current: list[float]) -> float:\n"
        "    return time.time()\n"
    )
    original, module = enhance(source, "stamp", domain=domain, config={"events_url": "http://127.0.0.1:9/events"})
    series = iter([10.0, 20.0, 30.0])
    monkeypatch.setattr("time.time", lambda: next(series))
    monkeypatch.setattr("time.process_time", lambda: pytest.fail("POET read the patched process_time"))
    assert [module.stamp([1.0, 2.0], [1.0, 2.0]) for _ in range(3)] == [10.0, 20.0, 30.0]
