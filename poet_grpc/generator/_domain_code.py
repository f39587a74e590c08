"""The domain's own code for one function: validated parameters, the domain's DomainCode
built from the analysed signature, made ready for the renderer.

Ready means: runtime helper blocks wrapped in one factory function per domain (the
builtins they use are imported inside it, so the module cannot rebind them), perceive
and enforce parts dropped when validate_inputs / validate_outputs are off (or the
function is a generator), and on_error / on_success parts guarded so that they never
replace the call's own outcome.
"""

from __future__ import annotations

import ast
import builtins
import functools
import math
import re
import symtable
import textwrap
from collections.abc import Mapping
from typing import Any

from poet_grpc.generator._analysis import Analysis
from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator.domains import DOMAINS, DomainCode, DomainInfo, Parameter, Target
from poet_grpc.generator._parsing import parse as parse_ast

INDENT = "    "


def collect(domain: str, analysis: Analysis, params: Mapping[str, Any]) -> DomainCode:
    """What `domain` adds to this function; AnalysisError("config") for a domain parameter
    config set out of its range or of the wrong shape."""
    info = DOMAINS[domain]
    check_params(info, params)
    if info.code is None:
        return DomainCode()
    node = analysis.node
    target = Target(
        name=analysis.info.name,
        is_async=analysis.info.is_async,
        is_generator=analysis.info.is_generator,
        parameters=tuple(_parameters(node.args, analysis)),
        returns=node.returns,
        scope=analysis.scope,
        tree=analysis.tree,
        params=params,
    )
    code = info.code(target)
    perceive = code.perceive if params.get("validate_inputs", True) else ()
    enforce = code.enforce if params.get("validate_outputs", True) and not target.is_generator else ()
    features = (code.perceive_features if perceive else ()) + (code.enforce_features if enforce else ())
    return DomainCode(
        runtime=(wrap_runtime(domain, code.runtime),) if code.runtime else (),
        start=code.start,
        perceive=perceive,
        before_operate=code.before_operate if not target.is_generator else (),
        enforce=enforce,
        on_error=_guarded(code.on_error, "on failure"),
        on_success=_guarded(code.on_success, "on success"),
        finish=code.finish,
        features=tuple(dict.fromkeys(features + code.features)),
    )


def _parameters(args: ast.arguments, analysis: Analysis) -> list[Parameter]:
    by_name = {p.name: p.kind for p in analysis.info.parameters}
    nodes = [*args.posonlyargs, *args.args]
    nodes += [args.vararg] if args.vararg else []
    nodes += list(args.kwonlyargs)
    nodes += [args.kwarg] if args.kwarg else []
    return [Parameter(a.arg, by_name[a.arg], a.annotation) for a in nodes]


def _guarded(lines: tuple[str, ...], when: str) -> tuple[str, ...]:
    if not lines:
        return ()
    return (
        "try:",
        *(INDENT + line for line in lines),
        "except Exception:",
        f"{INDENT}pass  # domain code {when} never changes the call's outcome",
    )


def check_params(info: DomainInfo, params: Mapping[str, Any]) -> None:
    """The domain parameters' declared ranges, choices and list item types."""
    for p in info.parameters:
        if p.name not in params:
            continue
        value = params[p.name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low = -math.inf if p.minimum is None else p.minimum
            high = math.inf if p.maximum is None else p.maximum
            if not low <= value <= high:
                raise AnalysisError("config", f"config {p.name!r} must be between {low:g} and {high:g}, not {value!r}")
        if p.choices and value not in p.choices:
            raise AnalysisError("config", f"config {p.name!r} must be one of {', '.join(p.choices)}, not {value!r}")
        if isinstance(p.default, list):
            kinds = {type(d) for d in p.default} or {str}
            if int in kinds:  # JSON numbers may arrive as floats (3.0): whole ones count as ints
                value = [int(v) if type(v) is float and v.is_integer() else v for v in value]
            if not all(type(v) in kinds for v in value):
                names = " or ".join(sorted(k.__name__ for k in kinds))
                raise AnalysisError("config", f"config {p.name!r} must be a list of {names}")


@functools.lru_cache(maxsize=256)
def wrap_runtime(domain: str, blocks: tuple[str, ...]) -> str:
    """The domain's helper blocks inside `def _poet_<domain>_runtime():`, which imports
    the builtins they read from `builtins` and returns every `_poet_`/`_POET_` name they
    define; the module binds those names from its result."""
    source = "\n\n".join(b.strip("\n") for b in dict.fromkeys(blocks)) + "\n"
    source = re.sub(r"\n{3,}", "\n\n", source)  # one blank line between nested definitions
    tree = parse_ast(source)
    exported: list[str] = []
    for stmt in tree.body:
        targets: list[str] = []
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            targets = [stmt.name]
        elif isinstance(stmt, ast.Assign):
            targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            targets = [stmt.target.id]
        exported += [t for t in targets if t.lower().startswith("_poet_") and t not in exported]
    used = sorted(builtins_read(source))
    factory = f"_poet_{domain}_runtime"
    lines = [
        f"def {factory}():",
        f'{INDENT}"""The {domain} helpers. Defined in here so that the builtins they use are bound locally:',
        f'{INDENT}a module that rebinds or star-imports one of those names cannot change them."""',
    ]
    if used:
        names = textwrap.wrap(", ".join(used), 100 - 2 * len(INDENT), break_on_hyphens=False)
        if len(names) == 1:
            lines.append(f"{INDENT}from builtins import {names[0]}")
        else:
            lines += [f"{INDENT}from builtins import (", *(2 * INDENT + n for n in names), f"{INDENT})"]
    lines.append("")
    lines += [(INDENT + line) if line.strip() else "" for line in source.rstrip("\n").split("\n")]
    names = textwrap.wrap(", ".join(exported) + ",", 100 - 2 * len(INDENT), break_on_hyphens=False)
    lines += ["", f"{INDENT}return (", *(2 * INDENT + n for n in names), f"{INDENT})", "", ""]
    lines += ["(", *(INDENT + n for n in names), f") = {factory}()"]
    return "\n".join(lines) + "\n"


def builtins_read(source: str) -> set[str]:
    """Builtin names the source reads as globals anywhere (not bound by the source itself)."""
    read: set[str] = set()
    top = symtable.symtable(source, "<poet-domain>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}

    def visit(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            name = symbol.get_name()
            if name.startswith("__") or not hasattr(builtins, name):
                continue
            if symbol.is_referenced() and (symbol.is_global() or table is top):
                read.add(name)
        for child in table.get_children():
            visit(child)

    visit(top)
    return read - bound
