"""Rendering: the enhanced module's text from the analysis and the parameters.

Layout of a generated module (deterministic: same input, same bytes):

1. a comment header (comments only, so a `from __future__` import stays first);
2. the original module source, unchanged;
3. the POET section: private imports, _POET_PARAMS, state, the original kept as
   `_poet_original_<name>`, check predicates and runtime helpers, then `<name>`
   redefined with the original's exact signature and docstring, running the four
   stages, and linked to the original (functools.update_wrapper: __wrapped__, __doc__...).

The domain's own code (domains/, prepared by _domain_code.collect) is placed in one
way for every domain: its helpers after the base helpers, its statements at the hook
points of the enhanced function (see domains._types.DomainCode).
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import symtable
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from poet_grpc.generator import _domain_code, _emitter, _runtime
from poet_grpc.generator._analysis import Analysis, ModuleScope, def_header
from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator._typecheck import (
    Check,
    accepts_float,
    describe,
    expression,
    names_used,
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
    analysis: Analysis, params: Mapping[str, Any], *, domain: str, optimize_for: str, version: str = ""
) -> Rendered:
    info, node, scope = analysis.info, analysis.node, analysis.scope
    name = info.name
    original = f"_poet_original_{name}"
    call = f"{original}({_forward(node.args)})"
    operate = not info.is_generator

    perceive = _perceive(analysis, params) if params["validate_inputs"] else None
    enforce = _enforce(analysis, params) if params["validate_outputs"] and operate else None
    domain_code = _domain_code.collect(domain, analysis, params)  # the domain's own code (domains/)
    features = {EXECUTION_METRICS}
    for stage in (perceive, enforce):
        features |= stage.features if stage else set()
    if operate and params["max_retries"] > 0:
        features.add(RETRY)
    if operate and params["timeout_seconds"] > 0:
        features.add(TIMEOUT)
    finite = FINITE_VALIDATION in features

    imports = ["contextvars", "functools", "threading", "time"]
    if info.is_async and operate:
        imports.append("asyncio")
    if any("_poet_numbers." in p for stage in (perceive, enforce) if stage for p in stage.predicates):
        imports.append("numbers")
    if any("_poet_abc." in p for stage in (perceive, enforce) if stage for p in stage.predicates):
        imports.append("collections.abc")
    if finite:
        imports.append("math")
    if operate:
        imports.append("random")

    blocks: list[str] = [
        "\n".join(f"import {m} as _poet_{m.rpartition('.')[2]}" for m in sorted(imports)),
        "\n".join(
            [
                f"_POET_FUNCTION = {_literal(name)}",
                f"_POET_DOMAIN = {_literal(domain)}",
                f"_POET_OPTIMIZE_FOR = {_literal(optimize_for)}",
                f"_POET_VERSION = {_literal(version)}",
                f"_POET_PARAMS = {_literal(dict(params), multiline=True)}",
                '"""Parameters of this version; the helpers read them at call time."""',
            ]
        )
        + "\n"
        + _runtime.STATE.format(transient=", ".join(_runtime.TRANSIENT_ERRORS), name=name)
        + (_runtime.JITTER if operate else "")
        + f"{original} = {name}",
    ]
    blocks += [p for stage in (perceive, enforce) if stage for p in stage.predicates]
    if perceive and perceive.statements:
        blocks.append(_runtime.ARGUMENT_ERROR)
    if enforce and enforce.statements:
        blocks.append(_runtime.RESULT_ERROR)
    if finite:
        blocks.append(_runtime.FINITE)
    if operate:
        blocks.append(_runtime.BACKOFF)
        blocks.append(_runtime.OPERATE_ASYNC if info.is_async else _runtime.OPERATE_SYNC)
    blocks.append(_runtime.TRAIN)
    blocks.append(_emitter.CANONICAL)  # fixed text: the gate recognises it
    blocks += domain_code.runtime
    enhanced = _enhanced_function(analysis, params, call, perceive, enforce, domain_code)
    blocks.append(enhanced)
    blocks.append(_finish(analysis, original) + "".join(line + "\n" for line in domain_code.finish))
    plain = enhanced.replace(def_header(node), _plain_header(node), 1)
    _check_builtins([plain if block is enhanced else block for block in blocks], scope, name)

    header = (
        "# Generated by POET's template generator. Do not edit: regenerate it through the POET service.\n"
        f"# Enhances {name}() for domain {domain!r}, optimised for {optimize_for!r}.\n"
        "# The original module follows unchanged. The POET section after it keeps the original\n"
        f"# function as {original} and redefines {name}() with the same signature, adding the\n"
        "# stages Perceive (argument checks), Operate (retries, deadline), Enforce (result check)\n"
        f"# and Train (metrics in {name}.poet_metrics). Standard library only.\n"
    )
    source = analysis_source(analysis)
    chunks = (header + "\n" + source + "\n\n# " + "=" * 28 + " POET section " + "=" * 28 + "\n",) + _top_level_chunks(blocks)
    optimizations = tuple(o for o in OPTIMIZATION_ORDER if o in features) + domain_code.features
    return Rendered(python="".join(chunks), optimizations=optimizations, chunks=chunks)


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
        checks = [
            f"if not {predicate}({value}):",
            f"{INDENT}raise _poet_argument_error({label}, {expected}, {value}{show})",
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
    statements = [
        "if not _poet_accepts_return(_poet_result):",
        f"{INDENT}raise _poet_result_error({_literal(expected)}, _poet_result{', True' if show_value else ''})",
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
    if not all(scope.is_builtin(n) for n in names_used(expr) if hasattr(builtins, n)):
        return None  # the module rebinds a builtin the check needs: no check
    return check, expr, elements and expr != expression(check, "value", elements=False)


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
) -> str:
    """The enhanced def; `domain` parts go where _domain_code.DomainCode says."""
    info = analysis.info
    name = info.name
    wait = "await " if info.is_async else ""
    body = [
        "if _poet_in_call.get():",
        f"{INDENT}# A call from inside {name}() itself (recursion): run the original directly.",
        f"{INDENT}return {wait}{call}",
        "_poet_token = _poet_in_call.set(True)",
        "_poet_started = _poet_time.perf_counter()",
        "_poet_cpu = _poet_execution_start()",
        '_poet_stage = "perceive"',
        "try:",
    ]
    stages: list[str] = list(domain.start)
    if perceive is None:
        stages.append("# Perceive: argument checks are off (validate_inputs).")
    elif perceive.statements:
        stages.append("# Perceive: arguments against their annotations.")
        stages += perceive.statements
    else:
        stages.append("# Perceive: no parameter has a checkable annotation.")
    if domain.perceive:
        stages += ["# Perceive: the domain's argument rules.", *domain.perceive]
    stages.append('_poet_stage = "operate"')
    stages += domain.before_operate
    if info.is_generator:
        stages += [
            "# Operate: calling a generator function only creates the generator;",
            "# there is nothing to retry or time out.",
            f"_poet_result = {call}",
        ]
    else:
        operate = "await _poet_operate_async" if info.is_async else "_poet_operate"
        stages += [
            "# Operate: the original, retried on transient errors, under the deadline.",
            f"_poet_result = {operate}(lambda: {call})",
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
    body += [
        "except BaseException as _poet_error:",
        *(INDENT + line for line in domain.on_error),
        f"{INDENT}# Train: record the failure; the exception itself propagates unchanged.",
        f"{INDENT}_poet_train(_poet_stage, _poet_error, _poet_started, _poet_cpu)",
        f"{INDENT}raise",
        "finally:",
        f"{INDENT}_poet_in_call.reset(_poet_token)",
        *domain.on_success,
        "# Train: record the success.",
        '_poet_train("success", None, _poet_started, _poet_cpu)',
        "return _poet_result",
    ]
    header = def_header(analysis.node, docstring=True)
    return header + "\n" + "\n".join(INDENT + line for line in body) + "\n"


def _finish(analysis: Analysis, original: str) -> str:
    info, args = analysis.info, analysis.node.args
    name = info.name
    lines = [f"_poet_functools.update_wrapper({name}, {original})  # __wrapped__, __doc__, __dict__..."]
    has_defaults = bool(args.defaults) or any(d is not None for d in args.kw_defaults)
    if has_defaults and not info.decorators:
        lines += [
            "# Share the original's default values (the same objects, not second evaluations).",
            f"{name}.__defaults__ = {original}.__defaults__",
            f"{name}.__kwdefaults__ = {original}.__kwdefaults__",
        ]
    lines += [f"{name}.poet_metrics = _POET_METRICS", f"{name}.poet_params = _POET_PARAMS"]
    lines.append(f"{name}.poet_flush_events = _poet_flush_events")
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


@functools.lru_cache(maxsize=512)
def _globals_read(block: str) -> frozenset[str]:
    """Names a block of top-level statements reads as globals (symtable), cached:
    most blocks are the same fixed helpers in every version. A block on its own
    may count a name the section assigns elsewhere: stricter, never looser."""
    read: set[str] = set()

    def visit(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            module_level = table.get_type() == "module" and not symbol.is_assigned() and not symbol.is_imported()
            if symbol.is_referenced() and (symbol.is_global() or module_level):
                read.add(symbol.get_name())
        for child in table.get_children():
            visit(child)

    visit(symtable.symtable(block, "<poet-section>", "exec"))
    return frozenset(read)


def _check_builtins(blocks: list[str], scope: ModuleScope, name: str) -> None:
    """The POET section must not read a builtin that the original module rebinds
    (the enhanced def given with its annotations and defaults stripped)."""
    if not any(hasattr(builtins, n) for n in scope.bound if n != name):
        return  # the module rebinds no builtin: nothing to clash with
    read: set[str] = set()
    for block in blocks:
        read |= _globals_read(block.strip("\n"))
    clashes = sorted(n for n in read if hasattr(builtins, n) and n in scope.bound and n != name)
    if clashes:
        raise AnalysisError(
            "original_code",
            "the module rebinds builtin name(s) the generated code relies on: " + ", ".join(clashes),
        )
