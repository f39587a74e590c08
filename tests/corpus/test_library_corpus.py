"""The generator proof on real libraries: boltons (iterutils, strutils, dictutils), funcy
(its modules) and humanize (typed), each module enhanced as shipped in the library's sdist
and put back into a copy of the library, whose own tests of that module then run.

- Originals: every module passes its own tests in a pristine copy (the corpus is sound).
- One function at a time: every top-level function of every module (private ones too),
  in every selected domain: generate(module=<dotted name>), the enhanced module written
  into a fresh copy of the library, the module's tests run (pytest -x in a runner
  process). At least 99% of the (function, domain) pairs must keep passing; a refused
  generation counts as a failure.
- Introspection, on the same enhanced copies, against the pristine original: signature,
  generator/coroutine/async-generator kind, type(), __wrapped__, __doc__, defaults,
  __name__/__qualname__/__module__ and pickling by reference. Any mismatch fails.
- All functions of a module together: each function enhanced in turn, the enhanced module
  fed back in for the next, then the module's tests on the result. The bounded run chains
  the first CHAIN_LIMIT functions of each module (each step reads the whole growing module);
  POET_CORPUS=full, or POET_CORPUS_CHAIN_LIMIT=0, chains them all.

Domains: base_reliability, data_processing and computation (chains: base_reliability);
POET_CORPUS=full selects every domain of DOMAINS, for chains too; POET_CORPUS_DOMAINS
(comma-separated) names them. POET_CORPUS_WORKERS: processes that generate, and as many
that run tests (default: the cores, at least 2). The sdists are downloaded once into a cache (see corpus/libraries.py).
The full report (every failure with its first failing test and error line, grouped by
cause) is printed at the end of the run, pass or fail.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corpus import libraries
from corpus.libraries import LIBRARIES, CorpusUnavailable, Library, Module, Outcome, Runners

# The whole corpus runs in the fixtures of the first test that needs it: ~4 minutes bounded,
# much longer with POET_CORPUS=full.
pytestmark = pytest.mark.timeout(1800 if os.environ.get("POET_CORPUS", "").lower() != "full" else 6 * 3600)

THRESHOLD = 0.99
BOUNDED_DOMAINS = ("base_reliability", "data_processing", "computation")
"""The CI run's domains: the base stages, and the two whose rules apply to any signature
(row sequences; sizes of ints and containers). The others act on parameters named by their
conventions (prompts, setpoints, paths, money...), which these libraries barely have."""


CHAIN_LIMIT = 12
"""The bounded run enhances the first 12 functions of a module together: all of them in 15
of the 23 modules (the other 8 have 13 to 63: boltons' iterutils and strutils, funcy's
colls, seqs, flow, funcs and debug, humanize's time). Each step of a chain generates from
the whole module enhanced so far, so a chain's cost grows with the square of its length."""


def _domains() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(domains of the one-function runs, domains of the chains)."""
    from poet_grpc.generator import DOMAINS

    named = [d.strip() for d in os.environ.get("POET_CORPUS_DOMAINS", "").split(",") if d.strip()]
    full = os.environ.get("POET_CORPUS", "").lower() == "full"
    if named:
        unknown = [d for d in named if d not in DOMAINS]
        if unknown:
            raise pytest.UsageError(f"POET_CORPUS_DOMAINS: unknown domain(s) {unknown}; known: {list(DOMAINS)}")
        singles = tuple(named)
    elif full:
        singles = tuple(DOMAINS)
    else:
        singles = tuple(d for d in BOUNDED_DOMAINS if d in DOMAINS)
    chains = singles if (full or named) else singles[:1]
    return singles, chains


def _chain_limit() -> int:
    """Most functions of a module enhanced together (0: all): POET_CORPUS_CHAIN_LIMIT, else
    all with POET_CORPUS=full and CHAIN_LIMIT in the bounded run."""
    configured = os.environ.get("POET_CORPUS_CHAIN_LIMIT", "")
    if configured.isdigit():
        return int(configured)
    return 0 if os.environ.get("POET_CORPUS", "").lower() == "full" else CHAIN_LIMIT


def _workers() -> int:
    configured = os.environ.get("POET_CORPUS_WORKERS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else max(2, os.cpu_count() or 2)


# ---------------------------------------------------------------- the corpus


@dataclass
class Target:
    """One module of one library, ready to test."""

    library: Library
    module: Module
    template: Path
    """A pristine copy of the library (the copies of the runs are made from it)."""
    source: str
    functions: list[str]

    @property
    def path(self) -> str:
        return self.library.module_path(self.module)


@dataclass
class Corpus:
    targets: list[Target]
    runners: Runners
    work: Path
    singles_domains: tuple[str, ...]
    chain_domains: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    _copies: Iterator[int] = field(default_factory=itertools.count)

    def copy(self, target: Target, source: str | None) -> Path:
        """A fresh copy of the target's library, with its module replaced by `source`."""
        destination = self.work / "copies" / f"{next(self._copies):05d}-{target.library.name}"
        replace = {target.path: source} if source is not None else None
        return libraries.copy_library(target.template, destination, replace)

    def run(self, target: Target, source: str | None, label: str, functions: list[str]) -> Outcome:
        """The target's tests (and the introspection of `functions`) on a copy whose module
        is `source` (None: the pristine template itself); for a runner thread."""
        copy = target.template if source is None else self.copy(target, source)
        try:
            outcome = self.runners.run(
                libraries.job(copy, target.library, target.module, introspect=functions, metrics=functions), label
            )
            outcome.module_file = _inside(outcome.module_file, copy)
            return outcome
        finally:
            if source is not None:
                shutil.rmtree(copy, ignore_errors=True)


def _inside(module_file: str | None, copy: Path) -> str | None:
    """The module's file relative to the copy; "ELSEWHERE: ..." when it is not in it."""
    if module_file is None:
        return None
    try:
        return str(Path(module_file).resolve().relative_to(copy.resolve()))
    except ValueError:
        return f"ELSEWHERE: {module_file}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    singles, chains = _domains()
    work = tmp_path_factory.mktemp("library-corpus")
    started = time.perf_counter()
    targets = []
    unavailable = None
    try:
        for library in LIBRARIES:
            root = libraries.unpack(library)
            template = libraries.copy_library(root, work / "templates" / library.name)
            for module in library.modules:
                source = (root / library.module_path(module)).read_text(encoding="utf-8")
                targets.append(Target(library, module, template, source, libraries.top_level_functions(source)))
    except CorpusUnavailable as error:
        unavailable = str(error)
    if unavailable:
        pytest.fail(f"the library corpus is unavailable: {unavailable}", pytrace=False)
    runners = Runners(_workers(), work / "logs")
    corpus = Corpus(targets, runners, work, singles, chains)
    corpus.timings["download and unpack"] = time.perf_counter() - started
    libraries.REPORT.clear()
    libraries.REPORT.append(
        "libraries: " + ", ".join(library.label for library in LIBRARIES)
        + f"; domains: {', '.join(singles)} (chains: {', '.join(chains)}); {runners.workers} runner processes;"
        + f" failing logs in {work / 'logs'}"
    )
    yield corpus
    runners.close()


@pytest.fixture(scope="module")
def originals(corpus) -> dict[str, Outcome]:
    """Module name -> its pristine run (its tests, and the facts of all its functions)."""
    started = time.perf_counter()
    futures = {
        t.module.name: corpus.runners.submit(corpus.run, t, None, f"original-{t.module.name}", t.functions)
        for t in corpus.targets
    }
    results = {name: future.result() for name, future in futures.items()}
    corpus.timings["originals"] = time.perf_counter() - started
    return results


@dataclass
class Pair:
    """One function of one module enhanced alone in one domain, and its run."""

    target: Target
    function: str
    domain: str
    refused: str | None = None
    """What generate() raised."""
    outcome: Outcome | None = None

    @property
    def label(self) -> str:
        return f"{self.target.module.name}.{self.function} [{self.domain}]"

    @property
    def passed(self) -> bool:
        return self.refused is None and self.outcome is not None and self.outcome.passed and not self.elsewhere

    @property
    def elsewhere(self) -> bool:
        return bool(self.outcome and self.outcome.module_file and self.outcome.module_file.startswith("ELSEWHERE"))

    def cause(self) -> tuple[str, str]:
        """(first failing test, error line); the test is "(generate)" for a refusal."""
        if self.refused is not None:
            return "(generate)", self.refused
        assert self.outcome is not None
        if self.elsewhere:
            return "(import)", f"the tests imported {self.outcome.module_file}, not the enhanced copy"
        return self.outcome.cause()


@dataclass
class ChainRun:
    target: Target
    domain: str
    functions: list[str]
    """The functions to enhance together: all of the module's, or its first CHAIN_LIMIT."""
    chain: libraries.Chain | None = None
    outcome: Outcome | None = None


def _chained(target: Target) -> list[str]:
    limit = _chain_limit()
    return target.functions[:limit] if limit else list(target.functions)


@dataclass
class Enhanced:
    pairs: list[Pair]
    chains: list[ChainRun]


@pytest.fixture(scope="module")
def enhanced(corpus, originals) -> Enhanced:
    """Every pair and every chain, generated by a pool of processes (generate() is CPU-bound),
    each tested by the runners as soon as it is generated."""
    sound = [t for t in corpus.targets if originals[t.module.name].passed]
    started = time.perf_counter()
    pairs: list[Pair] = []
    chains: list[ChainRun] = []
    generating = chaining = 0.0
    tests = []
    spawn = multiprocessing.get_context("spawn")  # this process has threads: no fork
    with ProcessPoolExecutor(max_workers=corpus.runners.workers, mp_context=spawn) as generators:
        pending: dict[Future, Pair | ChainRun] = {}
        for target in sound:
            for domain in corpus.chain_domains:  # first: each chain is one long task
                run = ChainRun(target, domain, _chained(target))
                chains.append(run)
                future = generators.submit(libraries.chain, target.source, target.module.name, run.functions, domain)
                pending[future] = run
            for function in target.functions:
                for domain in corpus.singles_domains:
                    pair = Pair(target, function, domain)
                    pairs.append(pair)
                    future = generators.submit(libraries.generated, target.source, target.module.name, function, domain)
                    pending[future] = pair
        for future in as_completed(pending):
            item = pending.pop(future)
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - the generating process died: a refusal
                result = libraries.Chain(item.target.source) if isinstance(item, ChainRun) else (None, None, 0.0)
                refusal = f"(generating process) {libraries.describe(error)}"
            else:
                refusal = None
            if isinstance(item, ChainRun):
                item.chain = result
                item.chain.refused = item.chain.refused or refusal
                chaining += item.chain.seconds
                source, functions = (item.chain.source, item.chain.enhanced) if item.chain.enhanced else (None, [])
                label = f"chain-{item.target.module.name}-{item.domain}"
            else:
                source, item.refused, seconds = result
                item.refused = item.refused or refusal
                generating += seconds
                functions, label = [item.function], item.label
            if source is not None:
                tests.append((item, corpus.runners.submit(corpus.run, item.target, source, label, functions)))
    corpus.timings["all generated after"] = time.perf_counter() - started
    for item, future in tests:
        item.outcome = future.result()
    corpus.timings["generate() one function at a time (sum)"] = generating
    corpus.timings["generate() chains (sum)"] = chaining
    corpus.timings["enhanced runs (generation and tests overlapped)"] = time.perf_counter() - started
    _report(corpus, originals, pairs, chains)
    return Enhanced(pairs, chains)


# ---------------------------------------------------------------- introspection


def _same_value(original: dict, enhanced: dict) -> bool:
    """Two default values (as _runner.facts describes them) are the same: of the same type
    with the same repr and, when the original is a module global (a sentinel such as
    `_MISSING`), that same global of the enhanced module, by identity. (The enhanced
    module's own globals may alias a default by chance: '' and small ints are interned.)"""
    if original["type"] != enhanced["type"] or original["repr"] != enhanced["repr"]:
        return False
    return not original["globals"] or bool(set(original["globals"]) & set(enhanced["globals"]))


def _same_defaults(original, enhanced) -> bool:
    if original is None or enhanced is None:
        return original is None and enhanced is None
    if isinstance(original, dict):
        return original.keys() == enhanced.keys() and all(_same_value(original[k], enhanced[k]) for k in original)
    return len(original) == len(enhanced) and all(_same_value(a, b) for a, b in zip(original, enhanced))


def _short(value: Any, limit: int = 90) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def introspection_mismatches(original: dict | None, enhanced: dict | None) -> list[str]:
    """What introspection tells apart between the original function and its enhanced version."""
    if original is None:
        return []  # not a module attribute in the original either (e.g. deleted after use)
    if enhanced is None:
        return ["missing from the enhanced module"]
    found = []
    for key in ("signature", "kind", "type", "doc", "__name__", "__qualname__", "__module__"):
        if original[key] != enhanced[key]:
            found.append(f"{key}: {_short(original[key])} != {_short(enhanced[key])}")
    if not enhanced["wrapped"]["present"]:
        found.append("__wrapped__: absent")
    elif enhanced["wrapped"]["name"] != original["__name__"]:
        found.append(f"__wrapped__: names {enhanced['wrapped']['name']!r}, not {original['__name__']!r}")
    for key in ("defaults", "kwdefaults"):
        if not _same_defaults(original[key], enhanced[key]):
            found.append(f"__{key}__: {_short(original[key])} != {_short(enhanced[key])}")
    if original["pickle"] == "reference" and enhanced["pickle"] != "reference":
        found.append(f"pickle: the original pickles by reference, the enhanced one gives {enhanced['pickle']!r}")
    return found


def _introspection(originals, enhanced: Enhanced) -> list[tuple[str, str]]:
    """(label, mismatch) for every enhanced function that was tested (pairs and chains)."""
    found = []
    for pair in enhanced.pairs:
        if pair.outcome is None or pair.outcome.error and not pair.outcome.facts:
            continue  # nothing to compare: reported by the pass/fail test
        original = originals[pair.target.module.name].facts.get(pair.function)
        for mismatch in introspection_mismatches(original, pair.outcome.facts.get(pair.function)):
            found.append((pair.label, mismatch))
    for run in enhanced.chains:
        if run.outcome is None or run.outcome.error and not run.outcome.facts:
            continue
        for function in run.chain.enhanced:
            original = originals[run.target.module.name].facts.get(function)
            for mismatch in introspection_mismatches(original, run.outcome.facts.get(function)):
                found.append((f"{run.target.module.name}.{function} [{run.domain}, all functions]", mismatch))
    return found


# ---------------------------------------------------------------- the report


def _cause_key(message: str, function: str) -> str:
    """A failure's error line with what varies from function to function taken out."""
    text = re.sub(rf"\b{re.escape(function)}\b", "<f>", message)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"0x[0-9a-fA-F]+|\b\d+(\.\d+)?\b", "N", text)
    return text if len(text) <= 110 else text[:107] + "..."


def _failure_lines(pairs: list[Pair]) -> list[str]:
    failed = [p for p in pairs if not p.passed]
    groups: dict[str, list[Pair]] = defaultdict(list)
    for pair in failed:
        groups[_cause_key(pair.cause()[1], pair.function)].append(pair)
    lines = []
    for key, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"  [{len(members)}] {key}")
        for pair in members:
            test, message = pair.cause()
            lines.append(f"      {pair.label}: {test}: {message}")
    return lines


def _chain_seconds(chains: list[ChainRun]) -> float:
    return sum(run.chain.seconds for run in chains if run.chain is not None)


def _report(corpus: Corpus, originals, pairs: list[Pair], chains: list[ChainRun]) -> None:
    report = libraries.REPORT
    header = (
        f"{'module':<20} {'functions':>9} {'pairs':>6} {'passed':>7} {'refused':>8} {'failed':>7}"
        f" {'called':>7} {'original s':>10}"
    )
    report += ["", "One function at a time (called: pairs whose enhanced function the tests called, by its"
               " poet_metrics; original s: one run of the module's tests):", header, "-" * len(header)]
    by_module: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_module[pair.target.module.name].append(pair)
    total = Counter()
    for target in corpus.targets:
        group = by_module.get(target.module.name, [])
        original = originals[target.module.name]
        row = Counter(
            functions=len(target.functions), pairs=len(group), passed=sum(p.passed for p in group),
            refused=sum(p.refused is not None for p in group),
            called=sum(bool(p.outcome and (p.outcome.calls.get(p.function) or 0) > 0) for p in group),
        )
        row["failed"] = row["pairs"] - row["passed"] - row["refused"]
        total.update(row)
        status = f"{original.seconds:>10.2f}" if original.passed else "   BROKEN"
        report.append(
            f"{target.module.name:<20} {row['functions']:>9} {row['pairs']:>6} {row['passed']:>7} {row['refused']:>8}"
            f" {row['failed']:>7} {row['called']:>7} {status}"
        )
    report.append("-" * len(header))
    report.append(
        f"{'TOTAL':<20} {total['functions']:>9} {total['pairs']:>6} {total['passed']:>7} {total['refused']:>8}"
        f" {total['failed']:>7} {total['called']:>7}"
    )
    rate = total["passed"] / total["pairs"] if total["pairs"] else 0.0
    report.append(
        f"pass rate {100 * rate:.1f}% of {total['pairs']} (function, domain) pairs (target {100 * THRESHOLD:.0f}%)"
    )
    by_domain = defaultdict(lambda: [0, 0])
    for pair in pairs:
        by_domain[pair.domain][0] += pair.passed
        by_domain[pair.domain][1] += 1
    report.append("by domain: " + ", ".join(f"{d} {p}/{n}" for d, (p, n) in by_domain.items()))
    broken = [name for name, outcome in originals.items() if not outcome.passed]
    if broken:
        report.append(f"ORIGINALS FAILING THEIR OWN TESTS (left out): {', '.join(broken)}")
    if any(not p.passed for p in pairs):
        report.append("failures, grouped by cause (module.function [domain]: first failing test: error):")
        report += _failure_lines(pairs)
    report += ["", "All functions of a module together (each enhanced in turn, the result fed back in; generate()"
               f" {_chain_seconds(chains):.0f} s in all):"]
    for run in chains:
        name = f"{run.target.module.name} [{run.domain}]"
        count = f"{len(run.chain.enhanced)}/{len(run.functions)} enhanced"
        if len(run.functions) < len(run.target.functions):
            count += f" (the first {len(run.functions)} of {len(run.target.functions)})"
        if run.chain.refused:
            count += f", refused at {run.chain.refused}"
        if run.outcome is None:
            verdict = "not tested"
        elif run.outcome.passed:
            verdict = "tests pass"
        else:
            test, message = run.outcome.cause()
            verdict = f"tests FAIL: {test}: {message}"
        report.append(f"  {name:<40} {count}; generate() {run.chain.seconds:.1f} s; {verdict}")
    mismatches = _introspection(originals, Enhanced(pairs, chains))
    report += ["", f"Introspection mismatches: {len(mismatches)}"]
    groups: dict[str, list[str]] = defaultdict(list)
    for label, mismatch in mismatches:
        groups[mismatch.split(":", 1)[0]].append(f"{label}: {mismatch}")
    for attribute, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        report.append(f"  [{len(members)}] {attribute}")
        report += [f"      {line}" for line in members]
    report += ["", "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in corpus.timings.items())]


# ---------------------------------------------------------------- the tests


def test_corpus_is_large_enough(corpus):
    names = {t.library.name for t in corpus.targets}
    assert {"boltons", "funcy", "humanize"} <= names
    assert {t.module.name for t in corpus.targets} >= {"boltons.iterutils", "boltons.strutils", "boltons.dictutils"}
    assert sum(len(t.functions) for t in corpus.targets) >= 250
    assert all(t.functions for t in corpus.targets), [t.module.name for t in corpus.targets if not t.functions]
    if not os.environ.get("POET_CORPUS_DOMAINS"):  # named domains are the caller's choice
        assert "base_reliability" in corpus.singles_domains


def test_originals_pass_their_own_tests(originals):
    failing = {name: outcome.cause() for name, outcome in originals.items() if not outcome.passed}
    elsewhere = {name: o.module_file for name, o in originals.items() if (o.module_file or "").startswith("ELSEWHERE")}
    assert not failing, f"the originals fail their own tests (the corpus, not POET, is wrong): {failing}"
    assert not elsewhere, f"the tests imported the library from outside the copy: {elsewhere}"


def test_each_function_enhanced_alone_keeps_passing(enhanced):
    pairs = enhanced.pairs
    assert pairs
    passed = sum(p.passed for p in pairs)
    rate = passed / len(pairs)
    if rate < THRESHOLD:
        lines = "\n".join(_failure_lines(pairs))
        pytest.fail(
            f"{passed}/{len(pairs)} (function, domain) pairs keep passing their library's tests"
            f" ({100 * rate:.1f}%, target {100 * THRESHOLD:.0f}%); failures by cause:\n{lines}",
            pytrace=False,
        )


def test_enhanced_functions_keep_their_introspection(originals, enhanced):
    mismatches = _introspection(originals, enhanced)
    if mismatches:
        functions = len({label for label, _ in mismatches})
        lines = "\n".join(f"  {label}: {mismatch}" for label, mismatch in mismatches)
        pytest.fail(f"{len(mismatches)} introspection mismatch(es) in {functions} enhanced function(s):\n{lines}",
                    pytrace=False)


def test_all_functions_of_a_module_together(enhanced):
    problems = []
    for run in enhanced.chains:
        name = f"{run.target.module.name} [{run.domain}]"
        if run.chain.refused:
            problems.append(f"{name}: generate() refused the enhanced module back, at {run.chain.refused}"
                            f" ({len(run.chain.enhanced)}/{len(run.functions)} enhanced)")
        elif run.outcome is not None and not run.outcome.passed:
            test, message = run.outcome.cause()
            problems.append(f"{name}: {test}: {message}")
    assert enhanced.chains
    if problems:
        pytest.fail(f"{len(problems)} of {len(enhanced.chains)} modules cannot be enhanced whole:\n  "
                    + "\n  ".join(problems), pytrace=False)
