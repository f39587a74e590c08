"""Rendering: the enhanced module's text from the analysis and the parameters.

Layout of a generated module (deterministic: same input, same bytes):

1. a comment header (comments only, so a `from __future__` import stays first);
2. the original module up to the target function, unchanged;
3. the POET section of the function: the module's shared event emitter (_emitter.CANONICAL,
   once per module: left out when an earlier section already has it), then the factory
   `_poet_enhance_<name>(_poet_original)` holding everything of this function (its imports,
   _POET_PARAMS, metrics, check predicates, runtime helpers and the enhanced function with
   the original's signature and docstring, linked by functools.update_wrapper);
4. the rest of the original, with `@_poet_enhance_<name>` added right above `def <name>`:
   the innermost decorator, so the original's own decorators wrap the enhanced function.

The domain's own code (domains/, prepared by _domain_code.collect) is placed in one
way for every domain: its helpers after the base helpers, its statements at the hook
points of the enhanced function (see domains._types.DomainCode).
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from poet_grpc.generator import _domain_code, _emitter, _runtime
from poet_grpc.generator._analysis import Analysis, ModuleScope, def_header
from poet_grpc.generator._typecheck import (
    Check,
    accepts_float,
    describe,
    expression,
    parameter_defaults,
    translate,
)

INDENT = "    "

# Names of what the generated code adds, in stage order (GeneratedCode.optimizations).
INPUT_VALIDATION = "input_validation"
ELEMENT_VALIDATION = "element_type_validation"
FINITE_VALIDATION = "finite_number_validation"
RETRY = "retry"
TIMEOUT = "timeout"
OUTPUT_VALIDATION = "output_validation"
EXECUTION_METRICS = "execution_metrics"
OPTIMIZATION_ORDER = (
    INPUT_VALIDATION,
    ELEMENT_VALIDATION,
    FINITE_VALIDATION,
    RETRY,
    TIMEOUT,
    OUTPUT_VALIDATION,
    EXECUTION_METRICS,
)


@dataclass(frozen=True)
class Rendered:
    python: str
    optimizations: tuple[str, ...]
    """What the generated code contains, in OPTIMIZATION_ORDER, then the domain's own safeguards."""
    chunks: tuple[str, ...] = ()
    """python in pieces of whole top-level statements, as rendered (the gate's shortcut)."""


@dataclass(frozen=True)
class _Stage:
    """Check code for one value: predicate definitions and the statements using them."""

    predicates: tuple[str, ...] = ()
    statements: tuple[str, ...] = ()
    features: frozenset[str] = frozenset()


def render(
    analysis: Analysis,
    params: Mapping[str, Any],
    *,
    domain: str,
    optimize_for: str,
    version: str = "",
    module: str = "",
) -> Rendered:
    """The enhanced module: the original with a POET section for the function (see the
    module docstring). `module`: the dotted name of the original module, which makes
    the function's identity in its events ("mypkg.text.first")."""
    info, node = analysis.info, analysis.node
    name = info.name
    identity = f"{module}.{name}" if module else name
    factory = f"{FACTORY_PREFIX}{name}"
    call = f"{ORIGINAL}({_forward(node.args)})"
    operate = not info.is_generator

    perceive = _perceive(analysis, params) if params["validate_inputs"] else None
    enforce = _enforce(analysis, params) if params["validate_outputs"] and operate else None
    domain_code = _domain_code.collect(domain, analysis, params)  # the domain's own code (domains/)
    features = {EXECUTION_METRICS}
    for stage in (perceive, enforce):
        features |= stage.features if stage else set()
    if operate and params["max_retries"] > 0:
        features.add(RETRY)
    hard_timeout = operate and not info.is_async and bool(params.get("hard_timeout"))
    if operate and params["timeout_seconds"] > 0 and (info.is_async or hard_timeout):
        features.add(TIMEOUT)
    finite = FINITE_VALIDATION in features

    imports = ["collections.abc", "contextvars", "functools", "threading", "time"]
    if info.is_async and operate:
        imports.append("asyncio")
    if any("_poet_numbers." in p for stage in (perceive, enforce) if stage for p in stage.predicates):
        imports.append("numbers")
    if finite:
        imports.append("math")
    if operate:
        imports.append("random")

    blocks: list[str] = [
        "\n".join(f"import {m} as _poet_{m.rpartition('.')[2]}" for m in sorted(imports)),
        "\n".join(
            [
                f"_POET_FUNCTION = {_literal(name)}",
                f"_POET_IDENTITY = {_literal(identity)}",
                '"""The function\'s identity in the service: its module and name."""',
                f"_POET_DOMAIN = {_literal(domain)}",
                f"_POET_OPTIMIZE_FOR = {_literal(optimize_for)}",
                f"_POET_VERSION = {_literal(version)}",
                f"_POET_PARAMS = {_literal(dict(params), multiline=True)}",
                '"""Parameters of this version; the helpers read them at call time."""',
            ]
        )
        + "\n"
        + _runtime.STATE.format(transient=", ".join(_runtime.TRANSIENT_ERRORS), name=name)
        + (_runtime.JITTER if operate else ""),
    ]
    blocks += [p for stage in (perceive, enforce) if stage for p in stage.predicates]
    if any(stage and stage.statements for stage in (perceive, enforce)):
        blocks.append(_runtime.VIOLATION)
    if finite:
        blocks.append(_runtime.FINITE)
    if operate:
        blocks.append(_runtime.BACKOFF)
        if info.is_async:
            blocks.append(_runtime.OPERATE_ASYNC)
        else:
            blocks.append(_runtime.OPERATE_SYNC)
            if hard_timeout:
                blocks.append(_runtime.OPERATE_THREAD)
    blocks.append(_runtime.TRAIN)
    blocks += domain_code.runtime
    enhanced = _enhanced_function(analysis, params, call, perceive, enforce, domain_code, hard_timeout)
    blocks.append(enhanced)
    blocks.append(_finish(analysis) + "".join(line + "\n" for line in domain_code.finish) + f"return {name}\n")

    header = (
        "# Generated by POET's template generator. Do not edit: regenerate it through the POET service.\n"
        f"# Enhances {name}() for domain {domain!r}, optimised for {optimize_for!r}.\n"
        "# The original module follows unchanged but for one line: right above `def "
        f"{name}`, the decorator\n"
        f"# @{factory}, defined just before, wraps the original function (under any decorators\n"
        "# it has) with the stages Perceive (argument checks), Operate (retries), Enforce (result\n"
        f"# check) and Train (metrics in {name}.poet_metrics). Standard library only.\n"
    )
    before, after = _split_at_function(analysis)
    section = _section(factory, name, blocks)
    emitter = "" if _emitter_before(analysis) else _emitter.CANONICAL + "\n\n\n"
    rule = "# " + "=" * 24 + f" POET section of {name}() " + "=" * 24 + "\n"
    chunks = [header + "\n" + before + ("\n\n" if before.strip() else "") + rule]
    if emitter:
        chunks.append(emitter)
    chunks.append(section + "\n\n")
    chunks.append(after)
    optimizations = tuple(o for o in OPTIMIZATION_ORDER if o in features) + domain_code.features
    return Rendered(python="".join(chunks), optimizations=optimizations, chunks=tuple(chunks))


FACTORY_PREFIX = "_poet_enhance_"
"""The factory of a function's POET section is _poet_enhance_<name>."""
ORIGINAL = "_poet_original"
"""Inside the factory: the original function, undecorated."""


def _section(factory: str, name: str, blocks: list[str]) -> str:
    """The factory: every block inside it (their names are its locals, so each enhanced
    function of a module has its own), the builtins they read bound first."""
    body = re.sub(r"\n{3,}", "\n\n", "\n\n".join(b.strip("\n") for b in blocks) + "\n")
    used = sorted(_domain_code.builtins_read(body))
    lines = [
        f"def {factory}({ORIGINAL}):",
        f'{INDENT}"""POET section of {name}(): its parameters, metrics and helpers, apart from any other',
        f"{INDENT}enhanced function of this module. Applied as {name}()'s innermost decorator, it returns",
        f'{INDENT}the enhanced function wrapping the original."""',
    ]
    if used:
        names = textwrap.wrap(", ".join(used), 100 - 2 * len(INDENT), break_on_hyphens=False)
        lines += [f"{INDENT}from builtins import (", *(2 * INDENT + n for n in names), f"{INDENT})"]
    lines.append("")
    lines += [(INDENT + line) if line.strip() else "" for line in body.rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


def _split_at_function(analysis: Analysis) -> tuple[str, str]:
    """The original source before the function's first decorator (or def) line, and
    from there on with `@_poet_enhance_<name>` inserted right above the def line."""
    node = analysis.node
    lines = analysis_source(analysis).splitlines(keepends=True)
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    def_line = node.lineno - 1
    before = "".join(lines[:first])
    after = "".join(lines[first:def_line]) + f"@{FACTORY_PREFIX}{node.name}\n" + "".join(lines[def_line:])
    return before, after


def _emitter_before(analysis: Analysis) -> bool:
    """The original already holds the canonical emitter block above the function (a
    module enhanced before, function by function)."""
    from poet_grpc.generator._capabilities import emitter_block

    indices = emitter_block(analysis.tree, analysis.source)
    return any(analysis.tree.body[i].lineno < analysis.node.lineno for i in indices)


def analysis_source(analysis: Analysis) -> str:
    """The original source, unchanged but for LF line ends (see analyze_module) and a final newline."""
    source = analysis.source
    return source if source.endswith("\n") else source + "\n"


def _top_level_chunks(blocks: list[str]) -> tuple[str, ...]:
    """Blocks separated like top-level code (two blank lines around definitions),
    each with the blank lines that follow it."""
    texts = [b.strip("\n") for b in blocks]
    return tuple(text + "\n\n\n" for text in texts[:-1]) + (texts[-1] + "\n",)


# --- Perceive and Enforce ---------------------------------------------------


def _all_args(args: ast.arguments) -> Iterator[ast.arg]:
    yield from args.posonlyargs
    yield from args.args
    if args.vararg:
        yield args.vararg
    yield from args.kwonlyargs
    if args.kwarg:
        yield args.kwarg


def _perceive(analysis: Analysis, params: Mapping[str, Any]) -> _Stage:
    node, scope = analysis.node, analysis.scope
    predicates: list[str] = []
    statements: list[str] = []
    features: set[str] = set()
    defaults = parameter_defaults(node.args)
    shadowed = frozenset(a.arg for a in _all_args(node.args))
    for arg in _all_args(node.args):
        checked = _checked(arg.annotation, scope, params, defaults.get(arg.arg))
        if checked is None:
            continue
        check, expr, has_elements = checked
        pname = arg.arg
        predicate = f"_poet_accepts_{pname}"
        expected, show_value = describe(check, ast.unparse(arg.annotation))
        expected, show = _literal(expected), (", True" if show_value else "")  # True: show the value itself
        finite = params["reject_non_finite_floats"] and accepts_float(check)
        predicates.append(_predicate(predicate, f"Perceive check of parameter {pname!r}", arg.annotation, expr))
        features.add(INPUT_VALIDATION)
        if has_elements:
            features.add(ELEMENT_VALIDATION)
        if finite:
            features.add(FINITE_VALIDATION)
        if arg is node.args.vararg:
            value, label, what = "_poet_value", _literal("*" + pname), _literal(f"argument in *{pname}")
            body = [f"for {value} in {pname}:"]
        elif arg is node.args.kwarg:
            value, label, what = "_poet_value", "_poet_key", 'f"argument {_poet_key!r}"'
            body = [f"for _poet_key, {value} in {pname}.items():"]
        else:
            value, label, what = pname, _literal(pname), _literal(f"argument {pname!r}")
            body = []
        fast = _fast_test(check, value, has_elements, shadowed)
        checks = [
            f"if not ({fast}{predicate}({value})):",
            f"{INDENT}_poet_violation({label}, {expected}, {value}{show})",
        ]
        if finite:
            checks += [f"if not _poet_is_finite({value}):", f"{INDENT}raise _poet_non_finite_error({what}, {value})"]
        statements += body + ([INDENT + c for c in checks] if body else checks)
    return _Stage(tuple(predicates), tuple(statements), frozenset(features))


def _enforce(analysis: Analysis, params: Mapping[str, Any]) -> _Stage:
    node = analysis.node
    checked = _checked(node.returns, analysis.scope, params)
    if checked is None:
        return _Stage()
    check, expr, has_elements = checked
    expected, show_value = describe(check, ast.unparse(node.returns))
    features = {OUTPUT_VALIDATION} | ({ELEMENT_VALIDATION} if has_elements else set())
    fast = _fast_test(check, "_poet_result", has_elements, frozenset(a.arg for a in _all_args(node.args)))
    statements = [
        f"if not ({fast}_poet_accepts_return(_poet_result)):",
        f'{INDENT}_poet_violation("", {_literal(expected)}, _poet_result{", True" if show_value else ""})',
    ]
    if params["reject_non_finite_floats"] and accepts_float(check):
        features.add(FINITE_VALIDATION)
        statements += [
            "if not _poet_is_finite(_poet_result):",
            f'{INDENT}raise _poet_non_finite_error("result", _poet_result)',
        ]
    predicate = _predicate("_poet_accepts_return", "Enforce check of the result", node.returns, expr)
    return _Stage((predicate,), tuple(statements), frozenset(features))


def _checked(
    annotation: ast.expr | None, scope: ModuleScope, params: Mapping[str, Any], default: ast.expr | None = None
) -> tuple[Check, str, bool] | None:
    """(check, predicate expression, uses element checks) or None when nothing is checkable."""
    check = translate(annotation, scope, default)
    if check is None:
        return None
    elements = bool(params["check_element_types"])
    expr = expression(check, "value", elements=elements)
    return check, expr, elements and expr != expression(check, "value", elements=False)


_FAST_CLASSES = {
    "int": ("int",),
    "float": ("float", "int"),
    "complex": ("complex", "float", "int"),
    "bool": ("bool",),
    "str": ("str",),
    "bytes": ("bytes",),
    "list": ("list",),
    "tuple": ("tuple",),
    "set": ("set",),
    "frozenset": ("frozenset",),
    "dict": ("dict",),
    "iterable": ("list", "tuple"),
    "collection": ("list", "tuple"),
    "sequence": ("list", "tuple"),
}
"""Exact classes a check surely accepts (the common case, tested before the full check:
`x.__class__ is int` costs a fraction of isinstance against a numbers ABC)."""


def _fast_test(check: Check, value: str, has_elements: bool, shadowed: frozenset[str]) -> str:
    """"value.__class__ is C or " tests for the check's common exact classes, or "" when
    elements must be checked too, or a parameter shadows a class name."""
    if has_elements:
        return ""
    tests: list[str] = []
    for member in check.members():
        if member.kind == "none":
            tests.append(f"{value} is None")
        for cls in _FAST_CLASSES.get(member.kind, ()):
            if cls in shadowed:
                return ""
            test = f"{value}.__class__ is {cls}"
            if test not in tests:
                tests.append(test)
    return "".join(t + " or " for t in tests[:3])


def _predicate(function: str, about: str, annotation: ast.expr, expr: str) -> str:
    comment = f"# {about}, annotated {ast.unparse(annotation)}"
    return f"def {function}(value):\n{INDENT}{comment}\n{INDENT}return {expr}\n"


# --- the enhanced function ----------------------------------------------------


def _forward(args: ast.arguments) -> str:
    """Arguments passing each parameter on exactly as received."""
    parts = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg:
        parts.append(f"*{args.vararg.arg}")
    parts += [f"{a.arg}={a.arg}" for a in args.kwonlyargs]
    if args.kwarg:
        parts.append(f"**{args.kwarg.arg}")
    return ", ".join(parts)


def _enhanced_function(
    analysis: Analysis,
    params: Mapping[str, Any],
    call: str,
    perceive: _Stage | None,
    enforce: _Stage | None,
    domain: _domain_code.DomainCode,
    hard_timeout: bool,
) -> str:
    """The enhanced def; `domain` parts go where _domain_code.DomainCode says."""
    info = analysis.info
    body = [
        '_poet_stage = "perceive"',
        "# Train: the call's start and CPU time, measured only when events are configured.",
        '_poet_cpu = (_POET_PARAMS.get("events_url") or _POET_EVENTS_ENV_URL) and _poet_cpu_clock()',
        "_poet_started = _poet_cpu and _poet_clock()",
        "try:",
    ]
    stages: list[str] = list(domain.start)
    if perceive is None:
        stages.append("# Perceive: argument checks are off (validate_inputs).")
    elif perceive.statements:
        stages.append("# Perceive: arguments against their annotations (observed or enforced: _poet_violation).")
        stages += perceive.statements
    else:
        stages.append("# Perceive: no parameter has a checkable annotation.")
    if domain.perceive:
        stages += ["# Perceive: the domain's argument rules.", *domain.perceive]
    stages.append('_poet_stage = "operate"')
    stages += domain.before_operate
    if info.is_generator and info.is_async:
        stages += [
            "# Operate: the original async generator, item by item: asend/athrow/aclose reach it as",
            "# sent; nothing is retried, so no item is ever yielded twice.",
            f"_poet_inner = {call}",
            "_poet_next = _poet_inner.asend(None)",
            "while True:",
            f"{INDENT}try:",
            f"{INDENT * 2}_poet_item = await _poet_next",
            f"{INDENT}except StopAsyncIteration:",
            f"{INDENT * 2}break",
            f"{INDENT}try:",
            f"{INDENT * 2}_poet_sent = yield _poet_item",
            f"{INDENT}except GeneratorExit:",
            f"{INDENT * 2}await _poet_inner.aclose()",
            f"{INDENT * 2}raise",
            f"{INDENT}except BaseException as _poet_thrown:",
            f"{INDENT * 2}_poet_next = _poet_inner.athrow(_poet_thrown)",
            f"{INDENT}else:",
            f"{INDENT * 2}_poet_next = _poet_inner.asend(_poet_sent)",
            "_poet_result = None",
        ]
    elif info.is_generator:
        stages += [
            "# Operate: the original generator, delegated to (send/throw/close reach it); nothing",
            "# is retried, so no item is ever yielded twice.",
            f"_poet_result = yield from {call}",
        ]
    elif info.is_async:
        stages += [
            "# Operate: the original, retried on transient errors, under the deadline.",
            f"_poet_result = await _poet_operate_async(lambda: {call})",
        ]
    elif hard_timeout:
        stages += [
            "# Operate: the original in a worker thread under the hard deadline, retried on transient errors.",
            f"_poet_result = _poet_operate_thread(lambda: {call})",
        ]
    else:
        stages += [
            "# Operate: the original; a transient error is retried (_poet_retry).",
            "try:",
            f"{INDENT}_poet_result = {call}",
            "except Exception as _poet_error:",
            f"{INDENT}if not _poet_should_retry(_poet_error):",
            f"{INDENT * 2}raise",
            f"{INDENT}_poet_result = _poet_retry(_poet_error, lambda: {call})",
        ]
    if info.is_generator:
        stages.append("# Enforce: the items a generator yields are not checked.")
    elif enforce is None:
        stages.append("# Enforce: result checks are off (validate_outputs).")
    elif enforce.statements:
        stages += ['_poet_stage = "enforce"', "# Enforce: the result against the return annotation."]
        stages += enforce.statements
    else:
        stages.append("# Enforce: the return annotation is not checkable.")
    if domain.enforce:
        stages += ['_poet_stage = "enforce"', "# Enforce: the domain's result rules.", *domain.enforce]
    body += [INDENT + line for line in stages]
    if info.is_generator:
        body += [
            "except GeneratorExit:  # closed early: the caller stopped, nothing failed",
            f'{INDENT}_POET_METRICS["successes"] += 1',
            f"{INDENT}raise",
        ]
    body += [
        "except BaseException as _poet_error:",
        *(INDENT + line for line in domain.on_error),
        f"{INDENT}# Train: record the failure; the exception itself propagates unchanged.",
        f"{INDENT}_poet_failed(_poet_stage, _poet_error, _poet_started, _poet_cpu)",
        f"{INDENT}raise",
        *domain.on_success,
        "# Train: record the success (calls = successes + failures).",
        '_POET_METRICS["successes"] += 1',
        "if _poet_cpu:",
        f"{INDENT}_poet_succeeded(_poet_started, _poet_cpu)",
        "return _poet_result" if not (info.is_generator and info.is_async) else "return",
    ]
    header = def_header(analysis.node, docstring=True).replace(def_header(analysis.node), _plain_header(analysis.node), 1)
    return header + "\n" + "\n".join(INDENT + line for line in body) + "\n"


def _finish(analysis: Analysis) -> str:
    name = analysis.info.name
    lines = [
        f"_poet_functools.update_wrapper({name}, {ORIGINAL})  # __wrapped__, __doc__, __qualname__, __dict__...",
        "# The original's default values (the same objects: the def above has placeholders).",
        f"{name}.__defaults__ = {ORIGINAL}.__defaults__",
        f"{name}.__kwdefaults__ = {ORIGINAL}.__kwdefaults__",
        f"{name}.poet_metrics = _poet_Metrics()",
        f"{name}.poet_params = _POET_PARAMS",
        f"{name}.poet_flush_events = _poet_flush_events",
    ]
    return "\n".join(lines) + "\n"


# --- helpers -------------------------------------------------------------------


def _literal(value: Any, *, multiline: bool = False) -> str:
    """Deterministic Python literal for JSON-compatible data (strings in double quotes)."""
    if isinstance(value, str):
        return json.dumps(value)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_literal(k)}: {_literal(v)}" for k, v in sorted(value.items())]
        if multiline and items:
            return "{\n" + "".join(f"{INDENT}{item},\n" for item in items) + "}"
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not JSON data: {value!r}")


def _plain_header(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The def line with annotations and defaults removed: what they read is the
    original's business, not the generated code's.

    Built from fresh nodes, never copy.deepcopy: bandit (run in-process by the gate)
    tags CPython's shared ast.Load/Store singletons with links into its own trees,
    so a deep copy of any tree can walk into another thread's bandit tree."""
    def bare(arg: ast.arg | None) -> ast.arg | None:
        return None if arg is None else ast.arg(arg=arg.arg)

    a = node.args
    args = ast.arguments(
        posonlyargs=[bare(x) for x in a.posonlyargs],
        args=[bare(x) for x in a.args],
        vararg=bare(a.vararg),
        kwonlyargs=[bare(x) for x in a.kwonlyargs],
        kw_defaults=[None if d is None else ast.Constant(None) for d in a.kw_defaults],
        kwarg=bare(a.kwarg),
        defaults=[ast.Constant(None) for _ in a.defaults],
    )
    plain = type(node)(name=node.name, args=args, body=[ast.Pass()], decorator_list=[], returns=None, type_comment=None)
    return def_header(plain)
