"""Analysis: what a source module and its function look like, from the AST alone.

Nothing here executes the code under analysis.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator._parsing import parse as parse_ast

RESERVED_PREFIX = "_poet_"
"""Names the generated POET section defines start with this (any case); the
original module may not use it for module-level names or parameters."""

POSITIONAL_ONLY = "POSITIONAL_ONLY"
POSITIONAL_OR_KEYWORD = "POSITIONAL_OR_KEYWORD"
VAR_POSITIONAL = "VAR_POSITIONAL"
KEYWORD_ONLY = "KEYWORD_ONLY"
VAR_KEYWORD = "VAR_KEYWORD"
"""Parameter kinds, named as `inspect.Parameter` names them."""

_TYPING_MODULES = frozenset({"typing", "typing_extensions"})

MAX_NESTING = 200
"""Deepest AST nesting accepted in the function's signature and decorators (CPython's
parser allows 200 nested brackets): analysis, rendering and the gate rewrite those with
ast.unparse, which recurses and overflows the stack on about 330 levels. The rest of
the module is copied verbatim, never recursed into: it may nest as deep as Python parses."""

MAX_PARAMETERS = 255
"""Default limit of parameters of the enhanced function (see analyze_module): the
generated checks grow with each parameter."""

_EXCERPT = 80
"""Characters of a syntax error's line quoted around its column."""
_LISTED = 20
"""Names listed in one message before "and N more"."""
_NAME = 60
"""Characters of one name quoted in a message."""


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of the analysed function."""

    name: str
    kind: str
    """One of POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD, VAR_POSITIONAL, KEYWORD_ONLY, VAR_KEYWORD."""
    annotation: str = ""
    """Annotation as source text; "" when unannotated."""
    has_default: bool = False
    default: str = ""
    """Default value as source text; "" when there is none."""


@dataclass(frozen=True)
class FunctionInfo:
    """The analysed top-level function and the module around it."""

    name: str
    is_async: bool
    is_generator: bool
    """True when the body itself yields (calling it only creates a generator)."""
    signature: str
    """Parameters and return annotation as source text, e.g. "(a: int, /, *args, k=1) -> str"."""
    parameters: tuple[ParamInfo, ...]
    return_annotation: str
    """"" when unannotated."""
    docstring: str | None
    decorators: tuple[str, ...]
    """Decorator expressions as source text, outermost first."""
    imports: tuple[str, ...]
    """Modules the module imports anywhere (sorted; relative ones start with ".")."""
    lineno: int


@dataclass(frozen=True)
class ModuleScope:
    """Which names the module binds at module level, for resolving annotations."""

    bound: frozenset[str]
    """Every name the module (possibly) binds globally."""
    typing_names: Mapping[str, str] = field(default_factory=dict)
    """Local name -> typing attribute, for names bound only by `from typing import X [as name]`."""
    typing_modules: frozenset[str] = frozenset()
    """Local names bound only by `import typing [as name]`."""
    star_import: bool = False
    """True when `from m import *` may bind anything."""

    def is_builtin(self, name: str) -> bool:
        """The name certainly refers to the builtin of that name."""
        return not self.star_import and name not in self.bound


@dataclass(frozen=True)
class Analysis:
    """Everything the renderer needs: the public info plus the parsed tree."""

    info: FunctionInfo
    source: str
    tree: ast.Module
    node: ast.FunctionDef | ast.AsyncFunctionDef
    scope: ModuleScope


def analyze(source: str, function_name: str, *, max_parameters: int | None = None) -> FunctionInfo:
    """Describe the top-level function `function_name` defined in `source`.

    Raises AnalysisError(field="original_code") when the source does not parse, the
    function's signature or decorators nest deeper than MAX_NESTING, the module uses
    names reserved for the generated code or (with
    max_parameters) the function has more parameters than that, and
    AnalysisError(field="function_name") when no top-level function has that name (the
    message lists the ones defined).
    """
    return analyze_module(source, function_name, max_parameters=max_parameters).info


def first_function_name(source: str) -> str:
    """Name of the first top-level function (def or async def) in `source`."""
    tree = parse(source)
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return stmt.name
    raise AnalysisError("original_code", "the code defines no top-level function")


def parse(source: str) -> ast.Module:
    """The module's AST; AnalysisError(field="original_code") when it does not parse."""
    try:
        return parse_ast(source, filename="<original_code>", type_comments=False)
    except SyntaxError as exc:
        raise AnalysisError("original_code", syntax_error_description(exc)) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        reason = shorten(str(exc), 200) or type(exc).__name__
        raise AnalysisError("original_code", f"the code cannot be parsed: {reason}") from None


def syntax_error_description(exc: SyntaxError) -> str:
    """"syntax error at line L, column C: message: 'excerpt'", quoting at most
    _EXCERPT characters of the line around the column (a line may be huge)."""
    where = f"line {exc.lineno}, column {exc.offset}" if exc.lineno else "unknown position"
    excerpt = _excerpt(exc.text or "", exc.offset)
    text = f": {excerpt!r}" if excerpt else ""
    return f"syntax error at {where}: {shorten(str(exc.msg), 200)}{text}"


def _excerpt(line: str, offset: int | None) -> str:
    indent = len(line) - len(line.lstrip())
    line = line.strip()
    if len(line) <= _EXCERPT:
        return line
    column = max((offset or 1) - 1 - indent, 0)
    start = max(0, min(column - _EXCERPT // 2, len(line) - _EXCERPT))
    end = start + _EXCERPT
    return ("..." if start else "") + line[start:end] + ("..." if end < len(line) else "")


def nests_deeper(tree: ast.AST, limit: int = MAX_NESTING) -> int | None:
    """The line of a node more than `limit` levels deep in tree (0 if it has none), or
    None when there is none. Walks level by level: no recursion."""
    level: list[ast.AST] = [tree]
    for _ in range(limit):
        below: list[ast.AST] = []
        for node in level:
            for name in node._fields:
                value = getattr(node, name, None)
                if value.__class__ is list:
                    below.extend([v for v in value if isinstance(v, ast.AST)])
                elif isinstance(value, ast.AST) and not isinstance(value, ast.expr_context):
                    below.append(value)
        if not below:
            return None
        level = below
    return next((n.lineno for n in level if hasattr(n, "lineno")), 0)


def _check_signature_nesting(node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    parts = [node.args, *node.decorator_list, *getattr(node, "type_params", ())]
    if node.returns is not None:
        parts.append(node.returns)
    for part in parts:
        line = nests_deeper(part)
        if line is not None:
            where = f" (line {line})" if line else ""
            raise AnalysisError(
                "original_code",
                f"the signature or decorators of {node.name}() nest deeper than {MAX_NESTING} levels{where}; "
                "simplify that annotation, default or decorator",
            )


def normalize_newlines(source: str) -> str:
    """source with CRLF and CR line ends as LF. Python reads all three as LF (in string
    literals too), so the code means the same; line-based steps then count lines as the
    parser does."""
    if "\r" not in source:
        return source
    return source.replace("\r\n", "\n").replace("\r", "\n")


def shorten(text: str, limit: int = _NAME) -> str:
    """text cut to at most limit characters, "..." marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(names: list[str]) -> str:
    shown = ", ".join(shorten(n) for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def analyze_module(source: str, function_name: str, *, max_parameters: int | None = None) -> Analysis:
    """analyze(), keeping the tree, the function's node and the module scope.
    Line ends are normalised first (Analysis.source has LF only)."""
    if not function_name:
        raise AnalysisError("function_name", "function_name is empty")
    if not function_name.isidentifier():
        raise AnalysisError("function_name", f"{shorten(function_name)!r} is not a Python identifier")
    source = normalize_newlines(source)
    tree = parse(source)
    node = _find_function(tree, function_name)
    if max_parameters is not None:
        _check_parameter_count(node, max_parameters)
    _check_signature_nesting(node)
    try:
        scope = module_scope(tree)
        _check_reserved(tree, scope, node)
        params = tuple(_parameters(node.args))
        info = FunctionInfo(
            name=node.name,
            is_async=isinstance(node, ast.AsyncFunctionDef),
            is_generator=_yields(node),
            signature=_signature(node),
            parameters=params,
            return_annotation=ast.unparse(node.returns) if node.returns is not None else "",
            docstring=ast.get_docstring(node),
            decorators=tuple(ast.unparse(d) for d in node.decorator_list),
            imports=_imports(tree),
            lineno=node.lineno,
        )
    except RecursionError:  # MAX_NESTING should prevent it; never let it become INTERNAL
        raise AnalysisError("original_code", "the code nests too deeply to analyse") from None
    return Analysis(info=info, source=source, tree=tree, node=node, scope=scope)


def _check_parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef, limit: int) -> None:
    a = node.args
    count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    if count > limit:
        raise AnalysisError(
            "original_code", f"{node.name}() has {count} parameters; functions with at most {limit} can be enhanced"
        )


def def_header(node: ast.FunctionDef | ast.AsyncFunctionDef, *, docstring: bool = False) -> str:
    """The `def`/`async def` line of the function as source text, without decorators;
    with docstring=True followed by the function's docstring (if any), indented."""
    body: list[ast.stmt] = [ast.Pass()]
    if docstring and node.body and _is_docstring(node.body[0]):
        body.insert(0, node.body[0])
    bare = type(node)(
        name=node.name,
        args=node.args,
        body=body,
        decorator_list=[],
        returns=node.returns,
        type_comment=None,
        **({"type_params": node.type_params} if hasattr(node, "type_params") else {}),
    )
    text = ast.unparse(ast.fix_missing_locations(bare))
    header, _, _ = text.rpartition("\n")  # drop the `pass`
    return header


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _find_function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    found = None
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            found = stmt  # the last definition is the one the module binds
    if found is not None:
        return found
    defined = [s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name and n not in tree.body
        for n in ast.walk(tree)
    )
    message = f"no top-level function named {shorten(name)!r}"
    if nested:
        message += " (a nested function or method of that name exists; only top-level functions can be enhanced)"
    if defined:
        message += "; functions defined: " + _listing(list(dict.fromkeys(defined)))
    else:
        message += "; the code defines no top-level function"
    raise AnalysisError("function_name", message)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    text = f"({ast.unparse(node.args)})"
    if node.returns is not None:
        text += f" -> {ast.unparse(node.returns)}"
    return text


def _parameters(args: ast.arguments) -> Iterator[ParamInfo]:
    positional = [*args.posonlyargs, *args.args]
    # defaults belong to the last len(defaults) positional parameters
    first_default = len(positional) - len(args.defaults)
    for index, arg in enumerate(positional):
        kind = POSITIONAL_ONLY if index < len(args.posonlyargs) else POSITIONAL_OR_KEYWORD
        default = args.defaults[index - first_default] if index >= first_default else None
        yield _param(arg, kind, default)
    if args.vararg is not None:
        yield _param(args.vararg, VAR_POSITIONAL, None)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        yield _param(arg, KEYWORD_ONLY, default)
    if args.kwarg is not None:
        yield _param(args.kwarg, VAR_KEYWORD, None)


def _param(arg: ast.arg, kind: str, default: ast.expr | None) -> ParamInfo:
    return ParamInfo(
        name=arg.arg,
        kind=kind,
        annotation=ast.unparse(arg.annotation) if arg.annotation is not None else "",
        has_default=default is not None,
        default=ast.unparse(default) if default is not None else "",
    )


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a function's body, not descending into nested scopes."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(child))


def _yields(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    body = ast.Module(body=node.body, type_ignores=[])
    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(body))


def _imports(tree: ast.Module) -> tuple[str, ...]:
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names.update(alias.name for alias in n.names)
        elif isinstance(n, ast.ImportFrom):
            names.add("." * n.level + (n.module or ""))
    return tuple(sorted(names))


def module_scope(tree: ast.Module) -> ModuleScope:
    """Names bound at module level, and which of them are typing names.

    Over-approximates (comprehension variables at module level count as bound),
    which only ever disables a type check, never adds one.
    """
    sources: dict[str, set[tuple[str, str]]] = {}
    star = False

    def bind(name: str, source: tuple[str, str] = ("other", "")) -> None:
        sources.setdefault(name, set()).add(source)

    stack: list[ast.AST] = list(tree.body)
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(n.name)
            # decorators, defaults, annotations and bases run at module level
            stack.extend(n.decorator_list)
            if isinstance(n, ast.ClassDef):
                stack.extend(n.bases)
                stack.extend(n.keywords)
            else:
                stack.append(n.args)
                if n.returns is not None:
                    stack.append(n.returns)
            continue
        if isinstance(n, ast.Lambda):
            stack.append(n.args)
            continue
        if isinstance(n, ast.arg):  # parameter names are local
            if n.annotation is not None:
                stack.append(n.annotation)
            continue
        if isinstance(n, ast.Import):
            for alias in n.names:
                if alias.asname:
                    bind(alias.asname, ("module", alias.name))
                else:
                    top = alias.name.partition(".")[0]
                    bind(top, ("module", top) if top == alias.name else ("other", ""))
            continue
        if isinstance(n, ast.ImportFrom):
            for alias in n.names:
                if alias.name == "*":
                    star = True
                elif n.level == 0 and n.module in _TYPING_MODULES:
                    bind(alias.asname or alias.name, ("typing", alias.name))
                else:
                    bind(alias.asname or alias.name)
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bind(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bind(n.name)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            bind(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            bind(n.rest)
        stack.extend(ast.iter_child_nodes(n))
    for n in ast.walk(tree):  # `global x` inside any function binds x in the module
        if isinstance(n, ast.Global):
            for name in n.names:
                bind(name)

    typing_names = {}
    typing_modules = set()
    for name, found in sources.items():
        if len(found) != 1:
            continue
        ((kind, what),) = found
        if kind == "typing":
            typing_names[name] = what
        elif kind == "module" and what in _TYPING_MODULES:
            typing_modules.add(name)
    return ModuleScope(
        bound=frozenset(sources),
        typing_names=typing_names,
        typing_modules=frozenset(typing_modules),
        star_import=star,
    )


def _check_reserved(tree: ast.Module, scope: ModuleScope, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    """Names starting with _poet_ are the generated code's. The module may hold them only
    as an earlier enhancement left them (so that a module is enhanced function by
    function): the event emitter block, exactly as POET writes it, and the POET section
    `_poet_enhance_<name>` of another of its functions. Parameters may never use them."""
    from poet_grpc.generator._capabilities import emitter_block, emitter_names

    parameters = sorted(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg) and a.arg.lower().startswith(RESERVED_PREFIX))
    if not parameters and not any(n.lower().startswith(RESERVED_PREFIX) for n in scope.bound):
        return
    allowed: set[str] = set()
    if emitter_block(tree, "", whole=True):
        allowed |= emitter_names()
    functions = {s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    sections = {f"_poet_enhance_{f}" for f in functions if f != node.name}
    allowed |= sections & functions
    if f"_poet_enhance_{node.name}" in scope.bound:
        raise AnalysisError(
            "original_code",
            f"{node.name}() is enhanced in this module already (its POET section _poet_enhance_{node.name}); "
            "send the module without that section to enhance it again",
        )
    reserved = sorted(n for n in scope.bound if n.lower().startswith(RESERVED_PREFIX) and n not in allowed)
    reserved += parameters
    if reserved:
        raise AnalysisError(
            "original_code",
            f"names starting with {RESERVED_PREFIX!r} are reserved for the generated code: " + _listing(reserved),
        )
