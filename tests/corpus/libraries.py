"""The library corpus: real libraries' own test suites, run against their modules enhanced
by POET (used by tests/corpus/test_library_corpus.py).

Each library is a pinned sdist from the package index (`pip download --no-binary :all:`,
checked against its sha256), unpacked once into a cache (cache_dir(): `$POET_CORPUS_CACHE`
when set, else `<venv>/poet-corpus`). Nothing of it is copied into this repository. For each
module the corpus names the library's own test files for it (and its doctests, where the
library's own configuration runs them).

- LIBRARIES: the libraries and their modules;
- unpack(library): its sdist, downloaded when missing, unpacked; CorpusUnavailable when it
  cannot be had (offline, hash mismatch);
- top_level_functions(source): the functions the corpus enhances, in source order;
- enhance(source, module, function, domain): generate() for one function of a module
  (generated(): the same as plain data, for a process pool);
- chain(source, module, functions, domain): the functions enhanced into one module, the
  enhanced module fed back in for the next function;
- copy_library(): a pristine copy of a library (the template) and cheap copies of it with
  one module replaced;
- Runners, job(): a small pool of `_runner.py` processes that run a module's tests (pytest,
  `-x -q -p no:cacheprovider`, plugin autoload off) in a copy and collect introspection
  facts of its functions, in parallel; Outcome: what one run gave.

The libraries' tests are third-party code, trusted like HumanEval's: they run in local
processes, never in the POET server.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).resolve().parent / "_runner.py"

REPORT: list[str] = []
"""What the corpus test found, printed at the end of the pytest run (tests/corpus/conftest.py)."""


@dataclass(frozen=True)
class Module:
    """One module of a library, and the library's own tests of it."""

    name: str
    """Dotted name, e.g. "boltons.iterutils"."""
    tests: tuple[str, ...]
    """The library's test files for it, relative to the sdist's root."""
    doctests: bool = False
    """The library's own configuration also runs the module's doctests."""


@dataclass(frozen=True)
class Library:
    """A pinned sdist and the modules of it the corpus enhances."""

    name: str
    version: str
    sha256: str
    """Of the sdist file: a different file is refused."""
    source_root: str
    """Where the packages are, relative to the sdist's root ("" or "src"): the sys.path entry."""
    config: str
    """The library's pytest configuration file (relative to the sdist's root): always passed
    with -c, so that no configuration outside the copy applies."""
    modules: tuple[Module, ...]

    @property
    def label(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def sdist(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"

    def module_path(self, module: Module) -> str:
        """The module's file, relative to the sdist's root."""
        parts = module.name.split(".")
        return str(Path(self.source_root, *parts[:-1], parts[-1] + ".py"))


def _boltons(name: str) -> Module:
    return Module(f"boltons.{name}", (f"tests/test_{name}.py",), doctests=True)


def _funcy(name: str, *tests: str) -> Module:
    # test_interface checks __name__ and __doc__ of every export: it concerns every module
    return Module(f"funcy.{name}", (*(tests or (f"tests/test_{name}.py",)), "tests/test_interface.py"))


def _humanize(name: str) -> Module:
    return Module(f"humanize.{name}", (f"tests/test_{name}.py",), doctests=True)


LIBRARIES: tuple[Library, ...] = (
    Library(
        name="boltons",
        version="26.2.0",
        sha256="d39cfd15c1a1c3bd4d705c82252fa9edb8e4f5e8cc039f8e39afac7b1b47e92c",
        source_root="",
        config="pyproject.toml",  # doctest option flags; its tox runs --doctest-modules on the package
        modules=(_boltons("iterutils"), _boltons("strutils"), _boltons("dictutils")),
    ),
    Library(
        name="funcy",
        version="2.1",
        sha256="8979feb3de7120afd1d00e5a8eae810c1942e4bfbc91697151e9ee1e49f79284",
        source_root="",
        config="setup.cfg",  # no pytest section: the defaults
        modules=(
            _funcy("calc"),
            _funcy("colls"),
            _funcy("debug"),
            _funcy("decorators"),
            _funcy("flow"),
            _funcy("funcmakers"),
            _funcy("funcolls"),
            _funcy("funcs"),
            _funcy("objects"),
            _funcy("seqs"),
            _funcy("strings"),
            _funcy("tree"),
            _funcy("types"),
            # no test file of their own: the tests of the modules that import them
            _funcy("_inspect", "tests/test_funcs.py"),
            _funcy(
                "primitives", "tests/test_colls.py", "tests/test_funcs.py", "tests/test_seqs.py",
                "tests/test_strings.py",
            ),
        ),
    ),
    Library(
        name="humanize",
        version="4.17.0",
        sha256="1d6a36c453dbfbb3f0b34601d2e0b4ce5d48d780305cd45714843f0068fde6ac",
        source_root="src",
        config="pyproject.toml",  # --doctest-modules, filterwarnings = error
        # test_benchmarks.py needs pytest-benchmark and tests nothing the others do not
        modules=tuple(_humanize(n) for n in ("filesize", "i18n", "lists", "number", "time")),
    ),
)


class CorpusUnavailable(RuntimeError):
    """A library of the corpus cannot be had (no network, a changed file)."""


def cache_dir() -> Path:
    """Where the sdists and their unpacked trees are kept: $POET_CORPUS_CACHE, else
    <sys.prefix>/poet-corpus (inside the venv)."""
    configured = os.environ.get("POET_CORPUS_CACHE")
    return Path(configured) if configured else Path(sys.prefix) / "poet-corpus"


_CACHE_LOCK = threading.Lock()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(library: Library) -> Path:
    """The library's sdist file in the cache, downloaded with pip when missing."""
    target = cache_dir() / "sdists"
    path = target / library.sdist
    if not path.exists():
        target.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-binary", ":all:", "--no-deps", library.label, "-d", str(target),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise CorpusUnavailable(f"pip download {library.label} did not finish within 600 s") from None
        if done.returncode != 0 or not path.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
            raise CorpusUnavailable(
                f"could not download the sdist of {library.label} from the package index (offline?). "
                f"Run `{' '.join(command)}` with network access, or set POET_CORPUS_CACHE to a directory "
                f"whose sdists/ holds {library.sdist}. pip said:\n{tail}"
            )
    digest = _sha256(path)
    if digest != library.sha256:
        raise CorpusUnavailable(
            f"{path} has sha256 {digest}, not the pinned {library.sha256}: delete it to download it again"
        )
    return path


def unpack(library: Library) -> Path:
    """The unpacked sdist (downloaded first when missing), without compiled files it shipped."""
    with _CACHE_LOCK:
        root = cache_dir() / "unpacked" / f"{library.name}-{library.version}"
        marker = root / ".poet-corpus-unpacked"
        if marker.exists():
            return root
        sdist = download(library)
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=root.parent))
        try:
            with tarfile.open(sdist) as archive:
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(staging, filter="data")
                else:  # Python before 3.11.4: the members are checked by the hash above
                    archive.extractall(staging)
            (top,) = [p for p in staging.iterdir() if p.is_dir()]
            for cached in [*top.rglob("__pycache__")]:  # pyc files some sdists ship (funcy)
                shutil.rmtree(cached, ignore_errors=True)
            for pyc in top.rglob("*.py[co]"):
                pyc.unlink()
            (top / marker.name).write_text(f"{library.label} {library.sha256}\n")
            if root.exists():
                shutil.rmtree(root)
            top.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for module in library.modules:
            for relative in (library.module_path(module), *module.tests):
                if not (root / relative).is_file():
                    raise CorpusUnavailable(f"the sdist of {library.label} has no {relative}")
        return root


def top_level_functions(source: str) -> list[str]:
    """Names of the module's top-level functions (def and async def, private ones too),
    in source order, each once."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in names:
            names.append(node.name)
    return names


# ---------------------------------------------------------------- enhancement


def enhance(source: str, module: str, function: str, domain: str, **spec: Any):
    """generate() for `function` of the module `source` (dotted name `module`) in `domain`.
    Raises what generate() raises."""
    from poet_grpc.core.models import EnhancementSpec
    from poet_grpc.generator import generate

    return generate(
        EnhancementSpec(function_name=function, original_code=source, domain=domain, module=module, **spec)
    )


def generated(
    source: str, module: str, function: str, domain: str, **spec: Any
) -> tuple[str | None, str | None, float]:
    """enhance() as plain data, for another process: (the enhanced module or None, what
    generate() raised or None, seconds)."""
    started = time.perf_counter()
    try:
        python, error = enhance(source, module, function, domain, **spec).python, None
    except Exception as exception:  # noqa: BLE001 - a refusal is a result
        python, error = None, describe(exception)
    return python, error, time.perf_counter() - started


@dataclass
class Chain:
    """Every function of a module enhanced into one module, one after the other."""

    source: str
    """The module with the functions enhanced so far (all of them when refused is None)."""
    enhanced: list[str] = field(default_factory=list)
    refused: str | None = None
    """The function whose enhancement failed, and how: "name: error"."""
    seconds: float = 0.0
    """Spent in generate()."""


def chain(source: str, module: str, functions: Sequence[str], domain: str, **spec: Any) -> Chain:
    """Enhance each function in turn, feeding the enhanced module back in for the next one;
    stops at the first refusal."""
    result = Chain(source)
    started = time.perf_counter()
    for function in functions:
        try:
            result.source = enhance(result.source, module, function, domain, **spec).python
        except Exception as error:  # noqa: BLE001 - reported by the caller
            result.refused = f"{function}: {describe(error)}"
            break
        result.enhanced.append(function)
    result.seconds = time.perf_counter() - started
    return result


def describe(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- copies


def copy_library(source: Path, destination: Path, replace: dict[str, str] | None = None) -> Path:
    """A copy of the library tree `source` at `destination`, with files of `replace`
    (relative path -> text) written anew. Unchanged files are hard links when the file
    system allows it (they are never written in place: a replaced file is unlinked first,
    and Python and pytest write their caches by renaming), so a copy costs milliseconds."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, destination, copy_function=link, symlinks=True)
    for relative, text in (replace or {}).items():
        path = destination / relative
        path.unlink()
        path.write_text(text, encoding="utf-8")
        for cached in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            cached.unlink()
    return destination


def pytest_arguments(library: Library, module: Module) -> list[str]:
    """The arguments that run the library's tests of `module`, from the copy's root."""
    arguments = ["-x", "-q", "-p", "no:cacheprovider", "-rfE", "--tb=short", "-c", library.config]
    if module.doctests:
        arguments += ["--doctest-modules", library.module_path(module)]
    return arguments + list(module.tests)


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    """What one run of a module's tests (and the introspection before it) gave."""

    returncode: int
    """pytest's exit code; -1 when the job failed outside pytest, -9 when it timed out."""
    log: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, int | None] = field(default_factory=dict)
    module_file: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    def cause(self) -> tuple[str, str]:
        """(first failing test, its error line), from pytest's output."""
        if self.returncode == -9:
            return "(timeout)", self.error or "timed out"
        return first_failure(self.log, fallback=self.error)


_SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")
_ERROR_LINE = re.compile(r"^E\s+(\S.*)$")


def first_failure(log: str, fallback: str | None = None) -> tuple[str, str]:
    """The first failing test of a `pytest -q -rfE --tb=short` output, and the line that
    says what went wrong (the exception, or a doctest's unexpected output)."""
    lines = log.splitlines()
    test, message = "", ""
    for line in lines:
        match = _SUMMARY.match(line)
        if match:
            test, message = match.group(2), (match.group(3) or "").strip()
            break
    if not message:
        errors = [m.group(1) for m in map(_ERROR_LINE.match, lines) if m]
        # the last E line of the first traceback names the exception
        for line in errors:
            if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Warning|Exit|Interrupt)\b", line):
                message = line
                break
        if not message and errors:
            message = errors[0]
    if not message:  # doctests: "UNEXPECTED EXCEPTION: ..." or Expected/Got
        for index, line in enumerate(lines):
            if "UNEXPECTED EXCEPTION:" in line:
                message = line.split("UNEXPECTED EXCEPTION:", 1)[1].strip()
                break
            if line.strip() == "Expected:":
                expected, got = _doctest_block(lines, index + 1, "Got:"), ""
                at = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "Got:"), None)
                if at is not None:
                    got = _doctest_block(lines, at + 1, "")
                message = f"doctest: expected {expected!r}, got {got!r}"
                break
    if not test and not message:
        tail = [line for line in lines if line.strip()][-3:]
        message = " | ".join(tail) or (fallback or "no output")
    if fallback and not test:
        message = message or fallback
    message = message.replace("\n", " ")
    return test or "(no test ran)", message if len(message) <= 300 else message[:297] + "..."


def _doctest_block(lines: list[str], start: int, end: str) -> str:
    """The lines from `start` up to the line `end` (stripped) or a blank one, joined."""
    block = []
    for line in lines[start:]:
        if not line.strip() or line.strip() == end:
            break
        block.append(line.strip())
    return " / ".join(block)


class Runners:
    """A pool of `_runner.py` processes (each serving jobs, forking a child per job), one
    per worker thread; submit() returns a Future of an Outcome."""

    def __init__(self, workers: int, logs: Path):
        self.workers = workers
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corpus-runner")
        self._local = threading.local()
        self._processes: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._fork = hasattr(os, "fork")

    @staticmethod
    def environment() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "POET_", "COV_"))}
        env.pop("PYTHONPATH", None)
        # Bytecode on: the pristine run writes the tests' compiled (assertion-rewritten)
        # files into the template, and every copy links to them instead of compiling again.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONHASHSEED="0", COLUMNS="300", PYTHONIOENCODING="utf-8")
        return env

    def _runner(self) -> subprocess.Popen:
        process = getattr(self._local, "process", None)
        if process is None or process.poll() is not None:
            process = subprocess.Popen(
                [sys.executable, "-P", str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, encoding="utf-8", env=self.environment(), cwd=tempfile.gettempdir(), bufsize=1,
            )
            self._local.process = process
            with self._lock:
                self._processes.append(process)
        return process

    def _log_path(self, label: str) -> Path:
        with self._lock:
            self._counter += 1
            number = self._counter
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:120]
        return self.logs / f"{number:05d}-{safe}.log"

    def run(self, job: dict[str, Any], label: str, keep_log: bool = False) -> Outcome:
        """Run `job` (see _runner.py; "log" is filled in) and return its Outcome. The log is
        read into the Outcome and deleted unless the tests failed or keep_log is set."""
        log = self._log_path(label)
        job = {**job, "log": str(log)}
        if self._fork:
            process = self._runner()
            try:
                process.stdin.write(json.dumps(job) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except (BrokenPipeError, OSError) as error:
                line, failure = "", describe(error)
            else:
                failure = "the corpus runner process ended"
            if not line:
                process.kill()
                process.wait()
                self._local.process = None  # the next job starts a new runner
                result = {"returncode": -1, "error": failure}
            else:
                result = json.loads(line)
        else:
            result = self._run_once(job)
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        outcome = Outcome(
            returncode=result.get("returncode", -1), log=text, facts=result.get("facts") or {},
            calls=result.get("calls") or {}, module_file=result.get("module_file"), error=result.get("error"),
            seconds=result.get("seconds", 0.0),
        )
        if outcome.passed and not keep_log and log.exists():
            log.unlink()
        return outcome

    def _run_once(self, job: dict[str, Any]) -> dict[str, Any]:
        """Without fork: the job in a fresh runner process."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
            json.dump(job, handle)
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-P", str(RUNNER), handle.name], capture_output=True, text=True,
                env=self.environment(), cwd=tempfile.gettempdir(), timeout=float(job.get("timeout", 120)),
            )
            lines = done.stdout.strip().splitlines()
            if lines:
                return json.loads(lines[-1])
            return {"returncode": -1, "error": done.stderr[-2000:] or f"runner exited {done.returncode}"}
        except subprocess.TimeoutExpired:
            return {"returncode": -9, "error": f"timed out after {job.get('timeout')} s",
                    "seconds": time.perf_counter() - started}
        finally:
            os.unlink(handle.name)

    def submit(self, fn, *args, **kwargs) -> Future:
        """fn(*args, **kwargs) on a worker thread (which may call run())."""
        return self._executor.submit(fn, *args, **kwargs)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for process in self._processes:
            if process.poll() is None:
                try:
                    process.stdin.close()
                    process.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    process.kill()
                    process.wait()

    def __enter__(self) -> Runners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job(copy: Path, library: Library, module: Module, *, introspect: Iterable[str] = (),
        metrics: Iterable[str] = (), tests: bool = True, timeout: float = 120.0) -> dict[str, Any]:
    """A runner job: in the library copy `copy`, import `module`, collect the facts of
    `introspect`, run the module's tests, then read the calls of `metrics`."""
    return {
        "root": str(copy),
        "path": [str(copy / library.source_root) if library.source_root else str(copy)],
        "module": module.name,
        "introspect": list(introspect),
        "metrics": list(metrics),
        "pytest": pytest_arguments(library, module) if tests else None,
        "timeout": timeout,
    }
