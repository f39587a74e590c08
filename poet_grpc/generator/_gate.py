"""The safety gate: generated code must parse, compile, keep the function's exact
signature, gain no dangerous capability, raise no new high-severity bandit finding,
and import cleanly in an isolated subprocess.

The gate trusts nothing in the generated text (it also serves LLM-written code):

- Capabilities (AST scan, check "capability"): code execution (exec, eval, compile,
  __import__, breakpoint, importlib.import_module), processes (os.system, os.popen,
  os.exec*, os.spawn*, os.posix_spawn*, subprocess, asyncio subprocesses, pty) and
  network modules (socket, urllib, http.client, ftplib, smtplib, requests, httpx,
  aiohttp and a few more). Each is allowed only if the original uses the same
  capability. The scan also counts indirect routes it can see: a module alias of
  os/builtins/importlib passed around as a value, getattr() with the name of a
  forbidden attribute, `__builtins__`, `sys.modules`. It is a static scan, not a
  proof: it catches what a reviewer would flag at a glance.
- The only exemption is the event emitter, recognised as the exact canonical text
  of `_emitter.CANONICAL` forming whole top-level statements; any other text (a
  modified emitter included) is scanned like the rest. Code outside that block may
  not rebind any name the block defines, nor read its private helpers (`_poet_ev_*`):
  only `_poet_emit`, `_poet_flush_events`, `_poet_execution_start` and
  `_poet_execution_event` are its interface.
- bandit (check "bandit"): the original and the generated module (emitter block
  blanked out) are scanned in this process, `# nosec` ignored, while the sandbox
  import runs; any HIGH-severity finding in the generated module whose test id
  the original's findings lack fails the gate.

Generated code never runs in this process. The import check runs
`python -I -B -c <_CHILD>` in a fresh session with a wall-clock timeout (the whole
process group is killed at expiry), a minimal environment (no server secrets),
stdout discarded, and an address-space limit (RLIMIT_AS) plus a CPU-time limit.
The limits are set by the child itself as its first act, before any untrusted code
is loaded, rather than through `preexec_fn`, which is unsafe in a threaded server
(generation runs on worker threads) and can deadlock the fork.

Third-party modules the original imports but this interpreter does not have are
replaced by stub modules in the sandbox (only those names, only when no real module
is found), so the gate checks POET's code, not whether the agent's dependencies are
installed on the server.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from poet_grpc.generator import _runtime
from poet_grpc.generator._analysis import analyze_module
from poet_grpc.generator._capabilities import check_capabilities, emitter_block
from poet_grpc.generator._errors import AnalysisError, GateError
from poet_grpc.generator._parsing import AST_LOCK
from poet_grpc.generator._parsing import parse as parse_ast

MEMORY_LIMIT_BYTES = 1 << 30
"""RLIMIT_AS of the sandbox: 1 GiB of address space."""

_STDERR_TAIL = 2000

_CHILD = r'''
import sys

def _limit_resources():
    import resource
    memory, cpu_seconds = int(sys.argv[1]), int(sys.argv[2])
    for which, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu_seconds)):
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, hard))

_limit_resources()

import importlib.util
import inspect
import json
import os
import re
import traceback

reference_path, generated_path, result_path, name, stub_roots = sys.argv[3:8]
stub_roots = set(json.loads(stub_roots))
stubbed = []


class _StubLoader:
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []
        stubbed.append(module.__name__)

        def __getattr__(attribute):
            if attribute.startswith("__"):
                raise AttributeError(attribute)
            from unittest import mock
            return mock.MagicMock(name=module.__name__ + "." + attribute)

        module.__getattr__ = __getattr__


class _StubFinder:
    """Last resort for the original's own imports that no real finder resolves."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in stub_roots:
            return importlib.util.spec_from_loader(fullname, _StubLoader(), is_package=True)
        return None


def finish(result):
    result["stubbed"] = sorted(set(stubbed))
    with open(result_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    sys.stdout.flush()
    os._exit(0)  # threads the module started cannot keep the sandbox alive


def fail(check, description):
    finish({"ok": False, "check": check, "description": description[:1000]})


def explain(error, path):
    where = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == path:
            where = " (line %d)" % frame.lineno
    return "%s: %s%s" % (type(error).__name__, error, where)


def load(path, module_name):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


if stub_roots:
    sys.meta_path.append(_StubFinder())
# Both load under one module name (one after the other), so that reprs of their
# classes and objects in signatures read the same; addresses are masked below.
try:
    reference = load(reference_path, "poet_gate_module")
except BaseException as error:
    fail("import", "the original module fails at import: " + explain(error, reference_path))
del sys.modules["poet_gate_module"]
try:
    generated = load(generated_path, "poet_gate_module")
except BaseException as error:
    fail("import", "the generated module fails at import: " + explain(error, generated_path))

original = getattr(reference, name, None)
enhanced = getattr(generated, name, None)
if not callable(enhanced):
    fail("function", "the generated module binds no callable %r" % name)
try:
    want = re.sub(r" at 0x[0-9a-fA-F]+", " at 0x?", str(inspect.signature(original, follow_wrapped=False)))
    got = re.sub(r" at 0x[0-9a-fA-F]+", " at 0x?", str(inspect.signature(enhanced, follow_wrapped=False)))
except (TypeError, ValueError) as error:
    fail("signature", "no signature at run time: %s" % error)
if want != got:
    fail("signature", "at run time the signature is %s%s, the original's is %s%s" % (name, got, name, want))
if inspect.iscoroutinefunction(original) != inspect.iscoroutinefunction(enhanced):
    fail("signature", "the generated function's async-ness differs from the original's at run time")
finish({"ok": True})
'''


def check_generated(
    original_source: str,
    generated_source: str,
    function_name: str,
    *,
    timeout_seconds: float = 10.0,
) -> None:
    """Raise GateError unless generated_source is an acceptable enhancement of
    function_name from original_source (see the module docstring).

    Checks, in order: "original" (the original analyses), "syntax" and "compile"
    (the generated code), "function" (a top-level def of the name exists),
    "signature" (same parameters, defaults, annotations, return annotation and
    async-ness as text, then again with inspect.signature in the sandbox),
    "capability" (no forbidden capability the original lacks; the emitter block's
    names are reserved), "bandit" (no new HIGH-severity finding, or bandit could
    not scan), "import" / "import_timeout" / "sandbox" (the isolated import).
    """
    try:
        original = analyze_module(original_source, function_name)
    except AnalysisError as exc:
        raise GateError("original", exc.description) from None
    tree, enhanced = _static_checks(generated_source, function_name)
    _compare_signatures(original.node, enhanced)
    exempt = emitter_block(tree, generated_source)
    check_capabilities(original.tree, tree, exempt)
    known = exempt | _known_statements(tree, generated_source, original_source, original.tree)
    scanned = _blank_statements(generated_source, tree, known)
    _sandbox_import(
        _undecorated(original_source, original.node),
        generated_source,
        function_name,
        stub_roots=_import_roots(original.tree),
        timeout_seconds=timeout_seconds,
        while_waiting=lambda: _bandit_check(original_source, scanned),
    )


def _static_checks(source: str, name: str) -> tuple[ast.Module, ast.FunctionDef | ast.AsyncFunctionDef]:
    try:
        tree = parse_ast(source, filename="<generated>")
    except SyntaxError as exc:
        raise GateError("syntax", f"line {exc.lineno}, column {exc.offset}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise GateError("syntax", str(exc)) from None
    try:
        compile(tree, "<generated>", "exec")  # compiles only; nothing runs
    except (SyntaxError, ValueError, RecursionError) as exc:
        where = f"line {exc.lineno}: " if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise GateError("compile", f"{where}{exc}") from None
    found = None
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            found = stmt
    if found is None:
        raise GateError("function", f"the generated code defines no top-level function {name!r}")
    return tree, found


def _signature_text(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    params = ast.unparse(node.type_params) if getattr(node, "type_params", None) else ""
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}{params}({ast.unparse(node.args)}){returns}"


def _compare_signatures(original: ast.AST, enhanced: ast.AST) -> None:
    want, got = _signature_text(original), _signature_text(enhanced)
    if want != got:
        raise GateError("signature", f"the generated function is `{got}`, the original is `{want}`")


def _undecorated(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The original source with the function's decorator lines removed, so that the
    sandbox compares against the signature of the def as written."""
    if not node.decorator_list:
        return source
    lines = source.splitlines(keepends=True)
    first = min(d.lineno for d in node.decorator_list) - 1
    return "".join(lines[:first] + lines[node.lineno - 1 :])


def _import_roots(tree: ast.Module) -> list[str]:
    """Top-level names of the absolute imports the original module makes."""
    roots = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            roots.update(alias.name.partition(".")[0] for alias in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            roots.add(n.module.partition(".")[0])
    return sorted(roots)


def _blank_statements(source: str, tree: ast.Module, indices: frozenset[int]) -> str:
    """source with the lines of those top-level statements emptied (line numbers kept)."""
    if not indices:
        return source
    lines = source.split("\n")
    for index in indices:
        start, end = _span(tree.body[index])
        for n in range(start - 1, end):
            lines[n] = ""
    return "\n".join(lines)


def _span(statement: ast.stmt) -> tuple[int, int]:
    """First and last line (1-based) of a top-level statement, decorators included."""
    start = statement.lineno
    for decorator in getattr(statement, "decorator_list", ()):
        start = min(start, decorator.lineno)
    return start, statement.end_lineno or start


def _covered(tree: ast.Module, lines: list[str], block: str) -> frozenset[int]:
    """Indices of the top-level statements that make up an occurrence of `block` (whole
    lines, every statement it touches entirely inside it), or empty."""
    block_lines = [line[:-1] if line.endswith("\r") else line for line in block.split("\n")]
    spans = [_span(s) for s in tree.body]
    for offset, line in enumerate(lines):
        if line != block_lines[0] or lines[offset : offset + len(block_lines)] != block_lines:
            continue
        low, high = offset + 1, offset + len(block_lines)
        inside: set[int] = set()
        for index, (start, end) in enumerate(spans):
            if end < low or start > high:
                continue
            if not (low <= start and end <= high):
                break  # a statement straddles the block: the text is not these statements
            inside.add(index)
        else:
            if inside:
                return frozenset(inside)
    return frozenset()


_RUNTIME_BLOCKS = tuple(
    getattr(_runtime, name).strip("\n")
    for name in ("JITTER", "ARGUMENT_ERROR", "RESULT_ERROR", "FINITE", "BACKOFF", "OPERATE_SYNC", "OPERATE_ASYNC")
    + ("TRAIN",)
    if isinstance(getattr(_runtime, name, None), str)
)
"""The template's fixed helper blocks, exactly as rendered."""


def _known_statements(tree: ast.Module, source: str, original_source: str, original: ast.Module) -> frozenset[int]:
    """Top-level statements bandit need not scan, to save time: the template's fixed
    helper blocks (exact text; they hold no high-severity finding) and the original's
    own statements copied verbatim (their findings are the original's, allowed anyway).
    Statements with an import anywhere stay: bandit resolves names through imports."""
    lines = [line[:-1] if line.endswith("\r") else line for line in source.split("\n")]
    known: set[int] = set()
    for block in _RUNTIME_BLOCKS:
        known |= _covered(tree, lines, block)
    copied = _covered(tree, lines, original_source.rstrip("\n"))
    if copied and len(copied) == len(original.body):
        known |= copied
    return frozenset(
        i for i in known if not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree.body[i]))
    )


# --- bandit -------------------------------------------------------------------------

_BANDIT_LOCK = AST_LOCK  # bandit parses inside: it shares the AST lock (see _parsing)
"""Serialises bandit runs: its manager and config are not documented as thread-safe."""
_bandit_config = None


def _bandit_issues(sources: dict[str, str]) -> dict[str, list[tuple[str, str, int, str]]]:
    """name -> [(test_id, severity, line, text)] for each source, scanned in memory.

    Raises GateError("bandit") when bandit is missing, fails, or cannot scan a source
    (the gate fails closed: it cannot vouch for code it could not scan).
    """
    global _bandit_config
    with _BANDIT_LOCK:
        try:
            with warnings.catch_warnings():  # stevedore's deprecation notices, at first import
                warnings.simplefilter("ignore")
                from bandit.core import config as bandit_config
                from bandit.core import manager as bandit_manager
        except ImportError as exc:
            raise GateError("bandit", f"bandit is not available: {exc}") from None
        try:
            if _bandit_config is None:
                _bandit_config = bandit_config.BanditConfig()
            manager = bandit_manager.BanditManager(_bandit_config, "file", quiet=True, ignore_nosec=True)
            for name, text in sources.items():
                # In memory: a file could be rewritten by the sandboxed import meanwhile.
                manager._parse_file(name, io.BytesIO(text.encode("utf-8")), [name])
            skipped = list(manager.skipped)
            found = [(i.fname, i.test_id, i.severity, i.lineno, i.text) for i in manager.get_issue_list()]
        except Exception as exc:  # bandit's internals changed, or it broke on this input
            raise GateError("bandit", f"bandit failed: {type(exc).__name__}: {exc}") from None
    if skipped:
        raise GateError("bandit", "bandit could not scan: " + "; ".join(f"{n}: {why}" for n, why in skipped))
    issues: dict[str, list[tuple[str, str, int, str]]] = {name: [] for name in sources}
    for fname, test_id, severity, line, text in found:
        issues[fname].append((test_id, severity, line, text))
    return issues


def _bandit_check(original_source: str, generated_source: str) -> None:
    issues = _bandit_issues({"/original.py": original_source, "/generated.py": generated_source})
    known = {test_id for test_id, _, _, _ in issues["/original.py"]}
    new = [i for i in issues["/generated.py"] if i[1] == "HIGH" and i[0] not in known]
    if new:
        described = "; ".join(f"{test_id} at line {line}: {text}" for test_id, _, line, text in new[:5])
        raise GateError("bandit", f"high-severity finding(s) the original does not have: {described}")


def _sandbox_import(
    reference: str,
    generated: str,
    name: str,
    *,
    stub_roots: list[str],
    timeout_seconds: float,
    while_waiting: Callable[[], None] | None = None,
) -> None:
    """Import in the sandbox; `while_waiting()` runs here while the child works (its
    errors win: the child is killed). timeout_seconds bounds the wait from the start."""
    with tempfile.TemporaryDirectory(prefix="poet-gate-") as tmp:
        folder = Path(tmp)
        reference_path = folder / "poet_gate_original.py"
        generated_path = folder / "poet_gate_generated.py"
        result_path = folder / "result.json"
        reference_path.write_text(reference, encoding="utf-8")
        generated_path.write_text(generated, encoding="utf-8")
        command = [
            sys.executable,
            "-I",
            "-B",
            "-c",
            _CHILD,
            str(MEMORY_LIMIT_BYTES),
            str(math.ceil(timeout_seconds) + 1),
            str(reference_path),
            str(generated_path),
            str(result_path),
            name,
            json.dumps(stub_roots),
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": tmp, "TMPDIR": tmp}
        with open(folder / "stderr.txt", "w+b") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=tmp,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            started = time.monotonic()
            try:
                if while_waiting is not None:
                    while_waiting()
                returncode = _wait(process, max(0.0, timeout_seconds - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                _kill_group(process)
                raise GateError(
                    "import_timeout", f"importing the generated module did not finish within {timeout_seconds:g} s"
                ) from None
            except BaseException:
                _kill_group(process)
                raise
            _kill_group(process)  # whatever the module left running
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - _STDERR_TAIL))
            tail = stderr.read().decode("utf-8", "replace").strip()
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise GateError(
                "sandbox", f"the sandbox exited with code {returncode} without a result: {tail or 'no output'}"
            ) from None
    if not result.get("ok"):
        raise GateError(str(result.get("check", "sandbox")), str(result.get("description", "")))


def _wait(process: subprocess.Popen, timeout: float) -> int:
    """process.wait(timeout), without its polling loop (sleeps of up to 50 ms) where
    Linux pidfds allow waiting for the exit directly."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return process.wait(timeout=timeout)
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not readable:
        raise subprocess.TimeoutExpired(process.args, timeout)
    return process.wait()


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
