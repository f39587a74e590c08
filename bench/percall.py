"""Per-call cost of an enhanced function: the original, POET's enhanced version, beartype's
@beartype and pydantic's @validate_call, on cheap annotated functions, in one process.

    .venv/bin/python bench/percall.py [--repeat 9] [--target-ms 40] [--only NAME,...] [--no-library]

The functions: simple ones written here (ints, floats, str helpers, list/dict/Optional/
Union parameters, *args, **kwargs, keyword-only, a generator consumed whole, a coroutine
awaited in a running event loop) and some of humanize's typed functions (from the corpus
sdist of tests/corpus/libraries.py, downloaded into its cache when missing; --no-library
leaves them out). POET's version is generated through generate() with the default
settings: domain base_reliability, optimize_for reliability, one enhanced module per
function (a library function's module is enhanced as shipped, with module= its dotted
name, and loaded beside the original in its package). beartype and validate_call
decorate the original function with their defaults.

Each variant's call is timed with timeit (a coroutine function: awaited in a loop inside
one asyncio.run; the number of calls calibrated so that one sample lasts about
--target-ms), the variants of a function taking turns, --repeat samples each; the table
shows medians per call. "+ns" is a variant's median minus the original's: what it adds
per call. The summary gives the median added cost of each over the functions all three
could decorate, the ratio of POET's median to beartype's, the median of the per-function
ratios, and the issue's targets as PASS/FAIL lines (POET adds at most 1 us per call, and
at most 3x what beartype adds). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import itertools
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from poet_grpc.core.models import EnhancementSpec  # noqa: E402
from poet_grpc.generator import generate  # noqa: E402

POET_BUDGET_NS = 1000.0
"""Target: POET adds at most this much per call (median over the functions)."""
BEARTYPE_RATIO = 3.0
"""Target: POET adds at most this many times what beartype adds."""

SOURCE = '''
"""Cheap annotated functions for bench/percall.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional, Union


def add(a: int, b: int) -> int:
    return a + b


def scale(x: float, factor: float = 2.0) -> float:
    return x * factor


def is_even(n: int) -> bool:
    return n % 2 == 0


def clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def greet(name: str) -> str:
    return "Hello, " + name


def shout(text: str, times: int = 1) -> str:
    return text.upper() * times


def head(text: str, n: int = 3) -> str:
    return text[:n]


def strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text


def maybe_len(text: Optional[str]) -> int:
    return 0 if text is None else len(text)


def parse_flag(value: Union[str, bool]) -> bool:
    return value if isinstance(value, bool) else value.lower() in ("1", "true", "yes")


def first_or_none(items: list[int]) -> Optional[int]:
    return items[0] if items else None


def total(values: list[float]) -> float:
    return sum(values)


def join_words(words: list[str], sep: str = " ") -> str:
    return sep.join(words)


def lookup(table: dict[str, int], key: str, default: int = 0) -> int:
    return table.get(key, default)


def merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {**a, **b}


def pair(a: str, b: int) -> tuple[str, int]:
    return (a, b)


def keyword_only(a: int, *, b: int = 1) -> int:
    return a * b


def args_sum(*values: int) -> int:
    return sum(values)


def kwargs_count(**options: int) -> int:
    return len(options)


def countdown(n: int) -> Iterator[int]:
    while n > 0:
        yield n
        n -= 1


async def double_later(x: int) -> int:
    return 2 * x
'''

SIMPLE_CASES: list[tuple[str, tuple, dict]] = [
    ("add", (1, 2), {}),
    ("scale", (1.5,), {}),
    ("is_even", (7,), {}),
    ("clamp", (5.0, 0.0, 1.0), {}),
    ("greet", ("world",), {}),
    ("shout", ("hey",), {"times": 2}),
    ("head", ("abcdef",), {}),
    ("strip_prefix", ("prefix-body", "prefix-"), {}),
    ("maybe_len", (None,), {}),
    ("parse_flag", ("yes",), {}),
    ("first_or_none", ([3, 4, 5],), {}),
    ("total", ([1.0, 2.0, 3.0],), {}),
    ("join_words", (["a", "b", "c"],), {}),
    ("lookup", ({"a": 1, "b": 2}, "b"), {}),
    ("merge", ({"a": 1}, {"b": 2}), {}),
    ("pair", ("x", 1), {}),
    ("keyword_only", (3,), {"b": 4}),
    ("args_sum", (1, 2, 3), {}),
    ("kwargs_count", (), {"a": 1, "b": 2}),
    ("countdown", (3,), {}),
    ("double_later", (21,), {}),
]
"""(function of SOURCE, positional arguments, keyword arguments)."""

LIBRARY_CASES: list[tuple[str, str, tuple, dict]] = [
    ("humanize.filesize", "naturalsize", (3_000_000.0,), {}),  # a float: beartype refuses an int for float | str
    ("humanize.number", "metric", (1500.0, "V"), {}),
    ("humanize.number", "ordinal", (3,), {}),
    ("humanize.number", "intcomma", (1_000_000,), {}),
    ("humanize.lists", "natural_list", (["a", "b", "c"],), {}),
    ("humanize.i18n", "thousands_separator", (), {}),
]
"""(module of the humanize sdist, function, positional arguments, keyword arguments)."""

VARIANTS = ("original", "poet", "beartype", "pydantic")

_COUNTER = itertools.count()


@dataclass
class Case:
    label: str
    function: Callable[..., Any]
    args: tuple
    kwargs: dict
    poet: Callable[..., Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """variant -> why it has no number (it could not decorate or call the function)."""
    samples: dict[str, list[float]] = field(default_factory=dict)
    """variant -> seconds per call, one per repeat."""

    def sampler(self, function: Callable[..., Any]) -> Callable[[int], float]:
        """sample(number): seconds that `number` calls of `function` take. A coroutine
        function is awaited `number` times inside one running event loop (its share of the
        loop's start is negligible); a generator is consumed whole."""
        if inspect.iscoroutinefunction(self.function):
            args, kwargs = self.args, self.kwargs

            async def calls(number: int) -> float:
                started = time.perf_counter()
                for _ in range(number):
                    await function(*args, **kwargs)
                return time.perf_counter() - started

            return lambda number: asyncio.run(calls(number))
        statement = "for _ in f(*a, **k): pass" if inspect.isgeneratorfunction(self.function) else "f(*a, **k)"
        return timeit.Timer(statement, globals={"f": function, "a": self.args, "k": self.kwargs}).timeit


def load(source: str, name: str) -> Any:
    """`source` as a module named `name` (a dotted name loads it inside that package)."""
    with tempfile.TemporaryDirectory(prefix="poet-percall-") as tmp:
        path = Path(tmp) / f"{name.rsplit('.', 1)[-1]}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def enhanced(source: str, function: str, module: str = "") -> Any:
    """POET's enhanced module of `function` (default settings), loaded: beside the original
    in its package when `module` is a dotted name."""
    code = generate(EnhancementSpec(function_name=function, original_code=source, domain="base_reliability",
                                    optimize_for="reliability", module=module))
    package = module.rpartition(".")[0]
    name = f"{package}._poet_percall_{next(_COUNTER)}" if package else f"poet_percall_{next(_COUNTER)}"
    return getattr(load(code.python, name), function)


def simple_cases() -> list[Case]:
    original = load(textwrap.dedent(SOURCE), "percall_cases")
    cases = []
    for name, args, kwargs in SIMPLE_CASES:
        case = Case(name, getattr(original, name), args, kwargs)
        try:
            case.poet = enhanced(SOURCE, name)
        except Exception as error:  # noqa: BLE001 - reported in the table
            case.errors["poet"] = f"{type(error).__name__}: {error}"
        cases.append(case)
    return cases


def library_cases() -> list[Case]:
    from corpus import libraries

    (library,) = [lib for lib in libraries.LIBRARIES if lib.name == "humanize"]
    root = libraries.unpack(library)
    copy = libraries.copy_library(root, Path(tempfile.mkdtemp(prefix="poet-percall-humanize-")) / "humanize")
    sys.path.insert(0, str(copy / library.source_root))
    cases = []
    for module_name, name, args, kwargs in LIBRARY_CASES:
        module = importlib.import_module(module_name)
        case = Case(f"{module_name.split('.', 1)[1]}.{name}", getattr(module, name), args, kwargs)
        source = Path(module.__file__).read_text(encoding="utf-8")
        try:
            case.poet = enhanced(source, name, module_name)
        except Exception as error:  # noqa: BLE001
            case.errors["poet"] = f"{type(error).__name__}: {error}"
        cases.append(case)
    return cases


def decorate(case: Case) -> dict[str, Callable[..., Any]]:
    """The variants of the case that can be called; the others get an entry in case.errors."""
    from beartype import beartype
    from pydantic import validate_call

    variants: dict[str, Callable[..., Any]] = {"original": case.function}
    if case.poet is not None:
        variants["poet"] = case.poet
    for variant, decorator in (("beartype", beartype), ("pydantic", validate_call)):
        try:
            variants[variant] = decorator(case.function)
        except Exception as error:  # noqa: BLE001 - e.g. an annotation only a type checker sees
            case.errors[variant] = f"{type(error).__name__}: {error}"
    expected = run_once(case, case.function)
    for variant, function in list(variants.items()):
        try:
            got = run_once(case, function)
        except Exception as error:  # noqa: BLE001
            case.errors[variant] = f"{type(error).__name__}: {error}"
            del variants[variant]
            continue
        if got != expected:
            case.errors[variant] = f"returned {got!r}, the original {expected!r}"
            del variants[variant]
    return variants


def run_once(case: Case, function: Callable[..., Any]) -> Any:
    if inspect.iscoroutinefunction(case.function):
        async def call() -> Any:
            return await function(*case.args, **case.kwargs)

        return asyncio.run(call())
    result = function(*case.args, **case.kwargs)
    return list(result) if inspect.isgenerator(result) else result


def calibrate(sample: Callable[[int], float], target_seconds: float) -> int:
    """How many calls make one sample last about target_seconds."""
    number = 1
    while True:
        seconds = sample(number)
        if seconds >= 0.2 or number >= 10**8:
            return max(1, int(number * target_seconds / max(seconds, 1e-9)))
        number *= 10 if seconds < 0.02 else 2


def measure(cases: list[Case], repeat: int, target_seconds: float) -> None:
    """Fill case.samples: per variant, `repeat` samples of seconds per call, the variants
    taking turns so that drift of the machine hits them alike."""
    for case in cases:
        samplers = {v: case.sampler(f) for v, f in decorate(case).items()}
        numbers = {v: calibrate(sample, target_seconds) for v, sample in samplers.items()}
        case.samples = {v: [] for v in samplers}
        for _ in range(repeat):
            for variant, sample in samplers.items():
                case.samples[variant].append(sample(numbers[variant]) / numbers[variant])
        print(f"  {case.label}", file=sys.stderr, flush=True)


def median_ns(case: Case, variant: str) -> float | None:
    samples = case.samples.get(variant)
    return statistics.median(samples) * 1e9 if samples else None


def added_ns(case: Case, variant: str) -> float | None:
    value, base = median_ns(case, variant), median_ns(case, "original")
    return None if value is None or base is None else value - base


def ratio(poet: float | None, beartype: float | None) -> float | None:
    if poet is None or beartype is None or beartype <= 0:
        return None
    return poet / beartype


def number(value: float | None, width: int, digits: int = 0) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9, help="samples per variant and function (default 9)")
    parser.add_argument("--target-ms", type=float, default=40.0, help="length of one sample in ms (default 40)")
    parser.add_argument("--only", default="", help="comma-separated function labels to measure (default: all)")
    parser.add_argument("--no-library", action="store_true", help="leave out the humanize functions")
    args = parser.parse_args()

    cases = simple_cases()
    if not args.no_library:
        try:
            cases += library_cases()
        except Exception as error:  # noqa: BLE001 - e.g. offline: the simple functions still run
            print(f"humanize functions left out: {type(error).__name__}: {error}", file=sys.stderr)
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.label in wanted]
    measure(cases, args.repeat, args.target_ms / 1000)

    import beartype
    import pydantic

    print(
        f"Per-call cost, {len(cases)} functions; Python {platform.python_version()}, {os.cpu_count()} cores;"
        f" beartype {beartype.__version__}, pydantic {pydantic.VERSION}; medians of {args.repeat} samples of"
        f" ~{args.target_ms:.0f} ms each"
    )
    print("POET: generate(), domain base_reliability, optimize_for reliability; +ns: added to the original's time")
    header = (
        f"{'function':<28} {'original ns':>11} {'POET +ns':>10} {'beartype +ns':>12} {'pydantic +ns':>12}"
        f" {'POET/beartype':>13}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        poet, bear, pyd = (added_ns(case, v) for v in ("poet", "beartype", "pydantic"))
        r = ratio(poet, bear)
        print(
            f"{case.label:<28} {number(median_ns(case, 'original'), 11)} {number(poet, 10)} {number(bear, 12)}"
            f" {number(pyd, 12)} {number(r, 13, 1)}"
        )
    problems = [(c.label, v, e) for c in cases for v, e in c.errors.items()]
    if problems:
        print("\nnot measured:")
        for label, variant, error in problems:
            print(f"  {label:<28} {variant:<9} {error[:150]}")

    complete = [c for c in cases if all(c.samples.get(v) for v in VARIANTS)]
    print(f"\nsummary over the {len(complete)} functions all of POET, beartype and pydantic could run:")
    medians = {}
    for variant in ("poet", "beartype", "pydantic"):
        values = [added_ns(c, variant) for c in complete]
        medians[variant] = statistics.median(values) if values else None
        print(f"  median added per call: {variant:<9} {number(medians[variant], 10)} ns")
    of_medians = ratio(medians["poet"], medians["beartype"])
    ratios = [r for r in (ratio(added_ns(c, "poet"), added_ns(c, "beartype")) for c in complete) if r is not None]
    median_ratio = statistics.median(ratios) if ratios else None
    print(f"  POET/beartype: ratio of the medians {number(of_medians, 0, 1)}x,"
          f" median of the per-function ratios {number(median_ratio, 0, 1)}x")
    poet_median = medians["poet"]
    checks = [
        (poet_median is not None and poet_median <= POET_BUDGET_NS,
         f"POET adds <= {POET_BUDGET_NS:.0f} ns per call (median): {number(poet_median, 0)} ns"),
        (of_medians is not None and of_medians <= BEARTYPE_RATIO,
         f"POET adds <= {BEARTYPE_RATIO:.0f}x what beartype adds (ratio of the medians): {number(of_medians, 0, 1)}x"),
        ("poet" not in {v for _, v, _ in problems},
         "POET enhanced and ran every function"),
    ]
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
