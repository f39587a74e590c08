"""Runs corpus jobs for tests/corpus/libraries.py: a library's own tests (pytest) against a
copy of the library, and the introspection facts of some of its functions.

    python -P tests/corpus/_runner.py          serve jobs: one JSON object per line on stdin,
                                               one JSON result per line on stdout
    python -P tests/corpus/_runner.py JOBFILE  run the job in JOBFILE once, print its result

Standard library and pytest only, and nothing of this repository: the library under test
must see a plain interpreter. Serving, the process imports pytest once and forks a child
per job (where os.fork exists), so a job costs the library's tests, not an interpreter and
pytest's start-up; elsewhere each job runs in a fresh process.

A job: {"root": the copy, "path": entries put first on sys.path, "module": dotted name,
"introspect": [function names], "metrics": [function names], "pytest": [arguments] or
null, "log": file for pytest's output, "timeout": seconds}. Its result: {"returncode":
pytest's exit code (or -1: the job itself failed, -9: timed out), "facts": {name: facts},
"calls": {name: calls the tests made to it, from its poet_metrics, or null}, "module_file":
where the module was imported from, "error": what went wrong outside pytest, "seconds"}.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import re
import signal
import sys
import tempfile
import time
import traceback

import pytest

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _text(value: object) -> str:
    """repr() without memory addresses: two imports of one module give equal texts."""
    try:
        return _ADDRESS.sub("", repr(value))
    except Exception as error:  # noqa: BLE001 - a broken __repr__ is a fact too
        return f"<repr failed: {type(error).__name__}>"


def _describe(value: object, module: object) -> dict:
    """A default value, comparable across imports: the module globals it is (by identity),
    its type and its repr."""
    aliases = sorted(name for name, other in vars(module).items() if other is value) if module else []
    kind = type(value)
    return {"globals": aliases, "type": f"{kind.__module__}.{kind.__qualname__}", "repr": _text(value)}


def facts(function: object, module: object) -> dict:
    """What introspection sees of `function` (see tests/corpus/test_library_corpus.py)."""
    out: dict = {}
    try:
        out["signature"] = _text(inspect.signature(function))
    except (TypeError, ValueError) as error:
        out["signature"] = f"<no signature: {type(error).__name__}: {error}>"
    out["kind"] = {
        "generator": inspect.isgeneratorfunction(function),
        "coroutine": inspect.iscoroutinefunction(function),
        "async_generator": inspect.isasyncgenfunction(function),
    }
    kind = type(function)
    out["type"] = f"{kind.__module__}.{kind.__qualname__}"
    present = hasattr(function, "__wrapped__")
    wrapped = getattr(function, "__wrapped__", None)
    out["wrapped"] = {"present": present, "name": getattr(wrapped, "__name__", None) if present else None}
    out["doc"] = getattr(function, "__doc__", None)
    for attribute in ("__name__", "__qualname__", "__module__"):
        value = getattr(function, attribute, None)
        out[attribute] = value if isinstance(value, str) or value is None else _text(value)
    defaults = getattr(function, "__defaults__", None)
    out["defaults"] = None if defaults is None else [_describe(v, module) for v in defaults]
    kwdefaults = getattr(function, "__kwdefaults__", None)
    out["kwdefaults"] = None if kwdefaults is None else {k: _describe(v, module) for k, v in sorted(kwdefaults.items())}
    try:
        out["pickle"] = "reference" if pickle.loads(pickle.dumps(function)) is function else "copy"
    except Exception as error:  # noqa: BLE001 - not picklable is a fact
        out["pickle"] = f"error: {type(error).__name__}"
    return out


def _calls(function: object) -> int | None:
    metrics = getattr(function, "poet_metrics", None)
    try:
        calls = metrics["calls"]  # type: ignore[index]
    except Exception:  # noqa: BLE001 - not enhanced, or metrics of another shape
        return None
    return calls if isinstance(calls, int) else None


def run_job(job: dict) -> dict:
    """The job, in this process (it changes the working directory, sys.path and sys.modules)."""
    result: dict = {"returncode": -1, "facts": {}, "calls": {}, "module_file": None, "error": None}
    os.chdir(job["root"])
    sys.path[:0] = job["path"]
    name = job["module"]
    try:
        module = importlib.import_module(name)
        result["module_file"] = getattr(module, "__file__", None)
        for function_name in job.get("introspect", ()):
            if hasattr(module, function_name):
                result["facts"][function_name] = facts(getattr(module, function_name), module)
            else:
                result["facts"][function_name] = None
    except BaseException:  # noqa: BLE001 - reported, and pytest would report it again
        result["error"] = "".join(traceback.format_exc(limit=-8))[-4000:]
    if job.get("pytest") is not None:
        with open(job["log"], "w", encoding="utf-8", errors="replace") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                result["returncode"] = int(pytest.main(list(job["pytest"])))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
        module = sys.modules.get(name)
        for function_name in job.get("metrics", ()):
            result["calls"][function_name] = _calls(getattr(module, function_name, None))
    elif result["error"] is None:
        result["returncode"] = 0
    return result


def _in_child(job: dict) -> dict:
    """run_job() in a forked child, within job["timeout"] seconds."""
    with tempfile.NamedTemporaryFile(prefix="poet-corpus-result-", suffix=".json", delete=False) as handle:
        out = handle.name
    try:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.setpgid(0, 0)  # its own group: a timeout kills what the tests started too
                result = run_job(job)
                with open(out, "w", encoding="utf-8") as handle:
                    json.dump(result, handle)
            except BaseException:  # noqa: BLE001
                code = 70
            finally:
                os._exit(code)
        deadline = time.monotonic() + float(job.get("timeout", 120))
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                for target in (-pid, pid):
                    try:
                        os.kill(target, signal.SIGKILL)
                    except OSError:
                        pass
                os.waitpid(pid, 0)
                return {"returncode": -9, "facts": {}, "calls": {}, "module_file": None,
                        "error": f"timed out after {job.get('timeout')} s"}
            time.sleep(0.005)
        try:
            with open(out, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {"returncode": -1, "facts": {}, "calls": {}, "module_file": None,
                    "error": f"the job's process ended with status {os.waitstatus_to_exitcode(status)} and no result"}
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass


def serve() -> None:
    """Jobs from stdin, results to stdout, until stdin closes."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        started = time.perf_counter()
        result = _in_child(job)
        result["seconds"] = time.perf_counter() - started
        out.write(json.dumps(result) + "\n")
        out.flush()


def main() -> None:
    if len(sys.argv) > 1:  # one job, in this process (no fork)
        with open(sys.argv[1], encoding="utf-8") as handle:
            job = json.load(handle)
        out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        started = time.perf_counter()
        result = run_job(job)
        result["seconds"] = time.perf_counter() - started
        out.write(json.dumps(result) + "\n")
        out.flush()
        os._exit(0)
    serve()


if __name__ == "__main__":
    main()
