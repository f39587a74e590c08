"""The safety gate: generated code must parse, compile, keep the function's exact
signature, gain no dangerous capability, raise no new high-severity bandit finding,
and import cleanly in the sandbox.

The gate trusts nothing in the generated text (it also serves LLM-written code):

- Capabilities (check "capability", see _capabilities): a static scan for code
  execution, processes, network and reaching into other code's namespaces; each is
  allowed only if the original uses the same capability. POET's event emitter is
  exempt by its exact canonical text only.
- bandit (check "bandit"): the generated module (the emitter block, the
  template's fixed helpers and the original's own statements blanked out) is
  scanned with the tests that can report HIGH severity, `# nosec` ignored; any
  HIGH finding whose test id the original's findings lack fails the gate (the
  original is scanned only then). Bidirectional control characters (bandit's
  B613, "trojan source") the original does not have are looked for here.
- The import (checks "compile", "import", "function", "signature",
  "import_timeout"): the original and the generated module are imported, one after
  the other, and their run-time signatures compared.

Submitted and generated code never runs in this process, nor anywhere but the
sandbox (poet_grpc.sandbox): the import runs there in a fresh process forked from
a warm worker, and bandit's scan at the same time in a warm confined worker of its
own, while this process does the static checks; work that overruns the time limit
is killed and the code refused. A sandbox that fails makes the gate fail closed
(check "sandbox"). The template's output comes with its chunks (see _Layout), so
the fixed helper blocks are neither parsed nor compiled again for every version.

Third-party modules the original imports but the runtime does not have are
replaced by stub modules in the sandbox (only those names, only when no real module
is found), so the gate checks POET's code, not whether the agent's dependencies are
installed on the server.
"""

from __future__ import annotations

import ast
import atexit
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poet_grpc.generator import _emitter
from poet_grpc.generator._analysis import Analysis, analyze_module, normalize_newlines
from poet_grpc.generator._capabilities import check_capabilities, emitter_block
from poet_grpc.generator._errors import AnalysisError, GateError
from poet_grpc.generator._parsing import parse as parse_ast
from poet_grpc.observability import tracing
from poet_grpc.sandbox import Pending, Sandbox, SandboxError, TaskResult

_IMPORT_JOB_SOURCE = Path(__file__).with_name("_gate_import_job.py").read_text(encoding="utf-8")
BANDIT_JOB = Path(__file__).with_name("_gate_bandit_job.py").read_text(encoding="utf-8")
"""What the gate's sandbox workers load (see _gate_import_job, _gate_bandit_job)."""

DEFAULT_TIMEOUT_SECONDS = 10.0


class GateSandbox:
    """The gate's two sandboxes: `imports` forks a fresh confined process per check
    to import the code; `scans` runs bandit (which only reads the code) in warm
    confined workers, one scan after another. Both have the same isolation."""

    def __init__(self, *, isolation: str = "namespaces", workers: int = 4,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, jobs: Sequence[str] = ()):
        """jobs: extra job sources loaded after the gate's own (tests replace a job this way)."""
        self.imports = Sandbox([IMPORT_JOB, *jobs], isolation=isolation, workers=workers,
                               timeout_seconds=timeout_seconds)
        self.scans = Sandbox([BANDIT_JOB, *jobs], isolation=isolation, workers=workers,
                             timeout_seconds=timeout_seconds, in_process=True)

    def start(self) -> "GateSandbox":
        try:
            self.imports.start()
            self.scans.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.imports.close()
        self.scans.close()

    @property
    def closed(self) -> bool:
        return self.imports.closed or self.scans.closed

    @property
    def isolation(self) -> str:
        return self.imports.isolation

    @property
    def timeout_seconds(self) -> float:
        return self.imports.timeout_seconds

    def describe(self) -> str:
        return f"{self.imports.describe()}; bandit in {self.scans.workers} warm confined workers"


_sandboxes: dict[tuple, GateSandbox] = {}
_sandboxes_lock = threading.Lock()


def gate_sandbox(
    *, isolation: str = "namespaces", workers: int = 4, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> GateSandbox:
    """The started sandbox the gate runs in, shared by every user of the same
    settings in this process (its warm workers outlive a server that is closed
    and opened again, as in tests). SandboxUnavailable when the host cannot give
    the chosen isolation."""
    key = (isolation, workers, timeout_seconds)
    with _sandboxes_lock:
        sandbox = _sandboxes.get(key)
        if sandbox is None or sandbox.closed:
            sandbox = GateSandbox(isolation=isolation, workers=workers, timeout_seconds=timeout_seconds).start()
            _sandboxes[key] = sandbox
        return sandbox


@atexit.register
def _close_sandboxes() -> None:
    with _sandboxes_lock:
        for sandbox in _sandboxes.values():
            sandbox.close()
        _sandboxes.clear()


@dataclass(frozen=True)
class SandboxChecks:
    """The gate's checks to run in the sandbox, with their inputs (prepare_checks()).
    Plain data, so that the other half may run in another process (see _processes)."""

    import_args: dict[str, Any]
    scan_args: dict[str, Any]


def check_generated(
    original_source: str,
    generated_source: str,
    function_name: str,
    *,
    chunks: Sequence[str] | None = None,
    original: Analysis | None = None,
    sandbox: GateSandbox | None = None,
    timeout_seconds: float | None = None,
    module: str = "",
) -> None:
    """Raise GateError unless generated_source is an acceptable enhancement of
    function_name from original_source (see the module docstring).

    Checks: "original" (the original analyses), "syntax" (the generated code
    parses), "function" (a top-level def of the name exists), "signature" (same
    parameters, defaults, annotations, return annotation and async-ness as text,
    then again with inspect.signature in the sandbox), "capability" (no forbidden
    capability the original lacks; the emitter block's names are reserved), then
    from the sandbox "compile", "import", "import_timeout", "bandit" (no new
    HIGH-severity finding, or bandit could not scan) and "sandbox". The checks of
    this process win over the sandbox's when both fail.
    `chunks`: the generated source as the template rendered it, in pieces of whole
    top-level statements (see _Layout); the check is the same, only cheaper.
    `original`: the original's analysis, when the caller has it already.
    `sandbox`: where to run (default: gate_sandbox()); `timeout_seconds`: the time
    limit of the sandboxed work (default: the sandbox's). CR and CRLF line ends are
    checked as LF, as Python reads them.
    prepare_checks() and start_sandbox_checks() are the same check in two halves.
    """
    with tracing.span("poet.gate"):
        checks, rest = _prepare(original_source, generated_source, function_name, chunks=chunks, original=original,
                                module=module)
        sandbox = sandbox or gate_sandbox()
        timeout_seconds = timeout_seconds or sandbox.timeout_seconds
        started = _submit(checks, sandbox, timeout_seconds, then=rest)
        _verdicts(started, timeout_seconds)


class StartedChecks:
    """The gate's sandbox checks of one version, under way (start_sandbox_checks)."""

    def __init__(self, pending: list[Pending], timeout_seconds: float):
        self._pending = pending
        self._timeout_seconds = timeout_seconds
        self._span = tracing.start_span("poet.gate")  # ends with the verdicts

    def verdicts(self) -> None:
        """Wait for them; GateError when one fails."""
        with tracing.use(self._span):
            _verdicts(self._pending, self._timeout_seconds)

    def cancel(self) -> None:
        for pending in self._pending:
            pending.cancel()
        self._span.end()


def start_sandbox_checks(checks: SandboxChecks, *, sandbox: GateSandbox | None = None,
                         timeout_seconds: float | None = None) -> StartedChecks:
    """Start what prepare_checks() left for the sandbox: the import and bandit's scan."""
    sandbox = sandbox or gate_sandbox()
    timeout_seconds = timeout_seconds or sandbox.timeout_seconds
    return StartedChecks(_submit(checks, sandbox, timeout_seconds), timeout_seconds)


def prepare_checks(
    original_source: str,
    generated_source: str,
    function_name: str,
    *,
    chunks: Sequence[str] | None = None,
    original: Analysis | None = None,
    module: str = "",
) -> tuple[SandboxChecks, Callable[[], None]]:
    """check_generated() in two halves, for a caller that runs them apart (even in
    another process): the sandbox's work (give it to start_sandbox_checks()), and the
    rest of this process's checks (call it meanwhile; GateError when one fails).
    `module`: the dotted name the code is imported as (its relative imports resolve
    against that package)."""
    return _prepare(original_source, generated_source, function_name, chunks=chunks, original=original, module=module)


def _prepare(
    original_source: str,
    generated_source: str,
    function_name: str,
    *,
    chunks: Sequence[str] | None,
    original: Analysis | None,
    module: str = "",
) -> tuple[SandboxChecks, Callable[[], None]]:
    """The sandbox's work, and the rest of this process's checks (to run while it works)."""
    original_source = normalize_newlines(original_source)
    generated_source = normalize_newlines(generated_source)
    if original is None or original.source != original_source or original.info.name != function_name:
        try:
            original = analyze_module(original_source, function_name)
        except AnalysisError as exc:
            raise GateError("original", exc.description) from None
    layout = _Layout.of(generated_source, chunks)
    tree, exempt = layout.tree, layout.exempt
    known = exempt | _known_statements(tree, generated_source, original)
    import_args = {
        "original": original_source,
        "module": module,
        # The chunks, when the layout used them, make up the generated source.
        **({"chunks": list(chunks)} if layout.chunked else {"generated": generated_source}),
        "name": function_name,
        "stub_roots": _import_roots(original.tree, module),
    }
    scan_args = {
        "original": original_source,
        "generated": layout.blank(_blank_statements(generated_source, tree, known)),
    }

    def rest() -> None:
        enhanced = _function(tree, function_name)
        try:
            _compare_signatures(original.node, enhanced)
        except RecursionError:  # ast.unparse of a signature nested absurdly deep
            raise GateError("syntax", "the generated code nests too deeply to check") from None
        check_capabilities(original.tree, tree, exempt, emitter=layout.emitter)
        _check_bidirectional_text(original_source, generated_source)

    return SandboxChecks(import_args, scan_args), rest


def _submit(checks: SandboxChecks, sandbox: GateSandbox, timeout_seconds: float,
            then: Callable[[], None] = lambda: None) -> list[Pending]:
    """Start the sandbox's work, run `then` meanwhile; the pending work."""
    started: list[Pending] = []
    try:
        started.append(sandbox.imports.submit([("gate.import", checks.import_args)], timeout_seconds=timeout_seconds))
        started.append(sandbox.scans.submit([("gate.bandit", checks.scan_args)], timeout_seconds=timeout_seconds))
        then()
    except BaseException as exc:
        for pending in started:
            pending.cancel()
        if isinstance(exc, SandboxError):
            raise GateError("sandbox", str(exc)) from None
        raise
    return started


def _verdicts(started: list[Pending], timeout_seconds: float) -> None:
    imports, scans = started
    try:
        (imported,) = imports.result()
    except SandboxError as exc:
        scans.cancel()
        raise GateError("sandbox", str(exc)) from None
    try:
        (scanned,) = scans.result()
    except SandboxError as exc:
        raise GateError("sandbox", str(exc)) from None
    _import_verdict(imported, timeout_seconds)
    _bandit_verdict(scanned)


class _Layout:
    """The generated module as the gate analyses it: `tree` holds every top-level
    statement the gate must read, `exempt` the indices in it of POET's own event
    emitter (exact canonical text), `emitter` whether the module has that block.

    From the whole text (LLM-written code) that is one parse. From the template's
    chunks, the fixed chunks (the emitter and the runtime helper blocks, exact text)
    are not parsed again: only the other chunks are, each on its own. That is the
    same module: a chunk that parses on its own ends every bracket, string and block
    it opens and starts at column 0, so the whole text tokenizes as the chunks do,
    one after the other. The fixed chunks stay out of the tree; they hold no
    capability (checked once, below) and the emitter's names stay reserved."""

    def __init__(self, tree: ast.Module, exempt: frozenset[int], emitter: bool, fixed_lines: list[tuple[int, int]],
                 chunked: bool = False):
        self.tree = tree
        self.exempt = exempt
        self.emitter = emitter
        self._fixed_lines = fixed_lines
        self.chunked = chunked

    @classmethod
    def of(cls, source: str, chunks: Sequence[str] | None) -> "_Layout":
        if chunks is None or "\r" in source or "".join(chunks) != source or not all(c.endswith("\n") for c in chunks):
            tree = _parse(source)
            exempt = emitter_block(tree, source)
            return cls(tree, exempt, bool(exempt), [])
        body: list[ast.stmt] = []
        fixed: list[tuple[int, int]] = []
        emitter = False
        line = 1
        for chunk in chunks:
            lines = chunk.count("\n")
            text = chunk.strip("\n")
            if text in _FIXED_CHUNKS:
                fixed.append((line, line + lines - 1))
                emitter = emitter or text == _EMITTER_TEXT
            else:
                body.extend(_parse(chunk, first_line=line).body)
            line += lines
        return cls(ast.Module(body=body, type_ignores=[]), frozenset(), emitter, fixed, chunked=True)

    def blank(self, source: str) -> str:
        """source without the fixed chunks' lines (line numbers kept)."""
        if not self._fixed_lines:
            return source
        lines = source.split("\n")
        for start, end in self._fixed_lines:
            lines[start - 1 : end] = [""] * (end - start + 1)
        return "\n".join(lines)


def _parse(source: str, *, first_line: int = 1) -> ast.Module:
    try:
        tree = parse_ast(source, filename="<generated>")
    except SyntaxError as exc:
        line = exc.lineno + first_line - 1 if exc.lineno else None
        raise GateError("syntax", f"line {line}, column {exc.offset}: {str(exc.msg)[:200]}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise GateError("syntax", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if first_line > 1:
        # Line numbers in the whole module. Not by blank lines in front of the chunk:
        # parsing those made the chunks' parses quadratic in the module's length.
        ast.increment_lineno(tree, first_line - 1)
    return tree


def _function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    found = None
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            found = stmt
    if found is None:
        raise GateError("function", f"the generated code defines no top-level function {name!r}")
    return found


def _import_verdict(result: TaskResult, timeout_seconds: float) -> None:
    if result.timed_out:
        raise GateError("import_timeout", f"importing the generated module did not finish within {timeout_seconds:g} s")
    if not result.ok:
        raise GateError("import", f"the import check failed: {result.error}")
    verdict = result.value if isinstance(result.value, dict) else {}
    if not verdict.get("ok"):
        raise GateError(str(verdict.get("check", "import"))[:40], str(verdict.get("description", ""))[:1000])


def _signature_text(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    params = ast.unparse(node.type_params) if getattr(node, "type_params", None) else ""
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}{params}({ast.unparse(node.args)}){returns}"


def _compare_signatures(original: ast.AST, enhanced: ast.AST) -> None:
    want, got = _signature_text(original), _signature_text(enhanced)
    if want != got:
        raise GateError("signature", f"the generated function is `{got}`, the original is `{want}`")


def _import_roots(tree: ast.Module, module: str = "") -> list[str]:
    """Top-level names of the absolute imports the original module makes, and of its own
    package (what its relative imports reach)."""
    roots = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            roots.update(alias.name.partition(".")[0] for alias in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            roots.add(n.module.partition(".")[0])
    if module:
        roots.add(module.partition(".")[0])
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


_RUNTIME_BLOCKS: tuple[str, ...] = ()
"""The template's fixed top-level helper blocks, exactly as rendered: none today (a
function's helpers live in its POET section, see _render); the emitter is the one fixed chunk."""

_EMITTER_TEXT = _emitter.CANONICAL.strip("\n")
_FIXED_CHUNKS = frozenset(_RUNTIME_BLOCKS) | {_EMITTER_TEXT}
"""Chunks of the template that the gate knows by their exact text."""


def _check_fixed_chunks() -> None:
    """Each fixed chunk parses on its own and, but for the emitter (exempt by
    design), uses no capability: checked once here rather than in every version."""
    empty = ast.Module(body=[], type_ignores=[])
    for text in _FIXED_CHUNKS:
        tree = parse_ast(text)
        if text != _EMITTER_TEXT:
            check_capabilities(empty, tree, frozenset())


_check_fixed_chunks()

IMPORT_JOB = _IMPORT_JOB_SOURCE + f"\n\nFIXED_CHUNKS = {tuple(sorted(_FIXED_CHUNKS))!r}\n"
"""The import job, told the fixed chunks it may compile ahead."""


BANDIT_HIGH_NODES = (ast.Call, ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef)
"""The nodes bandit's tests that can report HIGH severity look at (checked against
bandit in the tests): a statement holding none of them cannot have such a finding."""


def _known_statements(tree: ast.Module, source: str, original: Analysis) -> frozenset[int]:
    """Top-level statements bandit need not scan, to save time: the original's own
    statements copied verbatim, but for the enhanced def (their findings are the
    original's, allowed anyway), and statements without any node in BANDIT_HIGH_NODES
    (constants, docstrings). Statements with an import anywhere stay: bandit resolves
    names through imports."""
    lines = [line[:-1] if line.endswith("\r") else line for line in source.split("\n")]
    known: set[int] = set()
    body = original.tree.body
    at = body.index(original.node) if original.node in body else -1
    original_lines = original.source.split("\n")
    for part in (body[:at], body[at + 1 :]) if at >= 0 else ():
        if not part:
            continue
        first, _ = _span(part[0])
        text = "\n".join(original_lines[first - 1 : part[-1].end_lineno or first])
        copied = _covered(tree, lines, text)
        if len(copied) == len(part):
            known |= copied
    known |= _decorated_original(tree, lines, original)
    skipped = set()
    for index, statement in enumerate(tree.body):
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        kinds = {type(node) for node in ast.walk(statement)}
        if ast.Import in kinds or ast.ImportFrom in kinds:
            continue
        if index in known or not kinds.intersection(BANDIT_HIGH_NODES):
            skipped.add(index)
    return frozenset(skipped)


def _decorated_original(tree: ast.Module, lines: list[str], original: Analysis) -> set[int]:
    """The index of the original def as the template keeps it, its lines unchanged but for the
    one `@_poet_enhance_<name>` decorator line right above `def`; empty when it is not so."""
    node, name = original.node, original.node.name
    first, last = _span(node)
    want = original.source.split("\n")[first - 1 : last]
    for index, statement in enumerate(tree.body):
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) or statement.name != name:
            continue
        start, end = _span(statement)
        got = lines[start - 1 : end]
        marker = f"@_poet_enhance_{name}"
        if marker in got and got[:got.index(marker)] + got[got.index(marker) + 1 :] == want:
            return {index}
    return set()


# --- bandit -------------------------------------------------------------------------


_BIDIRECTIONAL = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Unicode controls that make code read differently from how it runs (bandit's
B613, "trojan source"), checked here: a scan of the text for a few characters."""


def _check_bidirectional_text(original: str, generated: str) -> None:
    new = {c for c in _BIDIRECTIONAL if c in generated} - {c for c in _BIDIRECTIONAL if c in original}
    if new:
        names = ", ".join(sorted(f"U+{ord(c):04X}" for c in new))
        raise GateError("bandit", f"B613: bidirectional control character(s) the original does not have: {names}")


def _bandit_verdict(result: TaskResult) -> None:
    """Fails on a HIGH-severity finding in the generated module whose test id the
    original's findings lack, and closed when bandit could not scan."""
    if result.timed_out:
        raise GateError("bandit", "bandit's scan did not finish in time")
    if not result.ok or not isinstance(result.value, dict):
        raise GateError("bandit", f"bandit failed: {result.error}")
    issues = result.value
    known = {issue[0] for issue in issues.get("original", [])}
    new = [i for i in issues.get("generated", []) if i[1] == "HIGH" and i[0] not in known]
    if new:
        described = "; ".join(f"{test_id} at line {line}: {text}" for test_id, _, line, text in new[:5])
        raise GateError("bandit", f"high-severity finding(s) the original does not have: {described}")
