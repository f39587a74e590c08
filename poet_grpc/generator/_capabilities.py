"""The capability scan of the gate: which dangerous capabilities a module's code
uses (code execution, processes, network, reaching other code's namespaces), and
the event emitter's exemption, which only its exact canonical text gets.

A static scan, not a proof and not the security boundary (that is the sandbox, see
poet_grpc.sandbox): it keeps generated code from gaining, in a way a reviewer
would flag, a capability the original does not have. Its rules (tables below):

- Modules: importing a module of _CAPABILITY_MODULES (or anything from it) is its
  capability: processes, network, importlib (also pkgutil, zipimport), ctypes,
  "deserialization" (pickle, marshal, shelve, dill), the code module, runpy,
  multiprocessing, asyncio.subprocess.
- Module paths: an expression is followed to the module path it names through import
  aliases (`import os as o`, `from shutil import os`), attributes and getattr() with a
  constant name. An attribute named like a sensitive module (_MODULE_ATTRIBUTES, also
  with underscores: `_os`, `__builtins__`) is that module whatever it is read from,
  since most modules expose os or sys: `shutil.os.system`, `tempfile._os.system` and
  `record.os.system` are all os.system, `x.subprocess` is subprocess. A path is a
  capability when its module is one, or it is a forbidden function of its module
  (os.system / popen / exec* / spawn* / fork*, builtins.exec, sys.modules,
  inspect.stack, gc.get_referrers, ...: _attribute_capability).
- Attribute names that are the capability whatever they are read from:
  _DYNAMIC_ATTRIBUTES (create_subprocess_shell, subprocess_exec, import_module, ...)
  and _INTROSPECTION (__subclasses__, __globals__, frames: f_back, gi_frame, tb_frame,
  _getframe, currentframe, ...). `model.eval()` or `platform.system()` are not.
- Values: a sensitive module (_SENSITIVE_MODULES) named by an alias, or read from a
  module (`o = shutil.os`), and used other than by reading an attribute from it.
  `record.os` alone passes when `record` is no module: only what is read through it
  (`record.os.system`) can be a capability.
- Dynamic lookups: getattr(x, <not a constant>) when x is a module (any module: most
  expose os or sys) or reached through one, but not on an ordinary object;
  getattr(x, "name") and operator.attrgetter / methodcaller with a name forbidden
  whatever the object (_key_capability: system, exec, __subclasses__, ...) or not a
  constant; getattr, vars, attrgetter or methodcaller other than called directly;
  globals(), locals(), vars() without argument or of a module; a module's __dict__ or
  __getattribute__; the strings "__builtins__" and "__import__"; a subscript key that
  names a code builtin (`d["exec"]`); a forbidden name assembled from string pieces
  (`"ex" + "ec"`, f-strings, "".join).

"A constant name" includes names assembled from literal pieces ("o" + "s" is "os").
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from poet_grpc.generator import _emitter
from poet_grpc.generator._errors import GateError
from poet_grpc.generator._parsing import parse as parse_ast

_CODE_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "breakpoint"})
"""Builtins that run or load code: a capability when read at all (called or passed on)."""

_OS_FUNCTIONS = {"system": "os.system", "popen": "os.popen", "startfile": "os.startfile"}
_OS_PREFIXES = {"exec": "os.exec*", "spawn": "os.spawn*", "posix_spawn": "os.spawn*", "fork": "os.fork"}
_OS_MODULES = frozenset({"os", "posix", "nt"})

_CAPABILITY_MODULES = {
    "subprocess": "subprocess",
    "_posixsubprocess": "subprocess",
    "asyncio.subprocess": "subprocess",
    "pty": "pty",
    "multiprocessing": "multiprocessing",
    "_multiprocessing": "multiprocessing",
    "concurrent.futures.process": "multiprocessing",
    "socket": "socket",
    "_socket": "socket",
    "socketserver": "socket",
    "urllib": "urllib",
    "urllib3": "urllib",
    "http.client": "http.client",
    "http.server": "http.client",
    "ftplib": "ftplib",
    "smtplib": "smtplib",
    "poplib": "network",
    "imaplib": "network",
    "nntplib": "network",
    "telnetlib": "network",
    "xmlrpc": "network",
    "requests": "requests",
    "httpx": "httpx",
    "aiohttp": "aiohttp",
    "websocket": "network",
    "websockets": "network",
    "importlib": "importlib",
    "imp": "importlib",
    "pkgutil": "importlib",
    "zipimport": "importlib",
    "ctypes": "ctypes",
    "_ctypes": "ctypes",
    "cffi": "ctypes",
    "pickle": "deserialization",
    "_pickle": "deserialization",
    "cPickle": "deserialization",
    "marshal": "deserialization",
    "shelve": "deserialization",
    "dill": "deserialization",
    "cloudpickle": "deserialization",
    "code": "code module",
    "codeop": "code module",
    "runpy": "runpy",
}
"""Importing these modules (or anything from them) is the capability named."""

_MODULE_ATTRIBUTES = {
    name: name
    for name in (
        "os", "posix", "nt", "sys", "builtins", "subprocess", "importlib", "socket", "ctypes",
        "pickle", "marshal", "shelve", "dill", "runpy", "multiprocessing", "pty",
    )
} | {"posixsubprocess": "subprocess", "cPickle": "pickle"}  # fmt: skip
"""Attribute names (leading and trailing underscores stripped) taken to be the module
named, whatever they are read from: `shutil.os`, `tempfile._os`, `x.__builtins__`."""

_MODULE_FUNCTIONS = {
    "sys.modules": "sys.modules",
    "inspect.stack": "introspection (inspect.stack)",
    "inspect.trace": "introspection (inspect.trace)",
    "inspect.getouterframes": "introspection (inspect.getouterframes)",
    "inspect.getinnerframes": "introspection (inspect.getinnerframes)",
    "gc.get_objects": "introspection (gc.get_objects)",
    "gc.get_referrers": "introspection (gc.get_referrers)",
    "gc.get_referents": "introspection (gc.get_referents)",
}
"""Module attributes (real module path) that are the capability named."""

_DYNAMIC_ATTRIBUTES = {
    "import_module": "importlib.import_module",
    "spec_from_file_location": "importlib",
    "spec_from_loader": "importlib",
    "module_from_spec": "importlib",
    "exec_module": "importlib",
    "load_module": "importlib",
    "create_subprocess_exec": "subprocess",
    "create_subprocess_shell": "subprocess",
    "subprocess_exec": "subprocess",
    "subprocess_shell": "subprocess",
    "ProcessPoolExecutor": "multiprocessing",
    "open_connection": "socket",
    "create_connection": "socket",
    "urlopen": "urllib",
}
"""Attribute names that are the capability whatever object they are read from."""

_INTROSPECTION = frozenset(
    {
        "__subclasses__", "__globals__", "__code__", "__builtins__", "f_globals", "f_builtins", "f_locals",
        "f_back", "gi_frame", "cr_frame", "ag_frame", "tb_frame", "_getframe", "_current_frames", "currentframe",
    }
)  # fmt: skip
"""Attributes that reach other code's namespaces (sandbox escapes, hidden builtins, frames)."""

_SENSITIVE_MODULES = _OS_MODULES | {"builtins", "importlib", "sys", "subprocess", "socket"}
"""Modules whose alias, passed around as a value, hides what is done with it."""

_OPERATOR_LOOKUPS = frozenset({"operator.attrgetter", "operator.methodcaller"})

_FORBIDDEN_NAMES = (
    _CODE_BUILTINS | _INTROSPECTION | set(_DYNAMIC_ATTRIBUTES) | set(_OS_FUNCTIONS) | set(_MODULE_ATTRIBUTES)
)
"""Names that, assembled from pieces ("ex" + "ec"), are a capability wherever they appear."""

_MAX_FOLDED = 64
"""Folded strings longer than this are dropped: no forbidden name is that long."""


_MODULE_DEPTH = max(name.count(".") + 1 for name in _CAPABILITY_MODULES)


def _capability_of_module(module: str) -> str | None:
    parts = module.split(".", _MODULE_DEPTH)[:_MODULE_DEPTH]  # no longer prefix can match
    for n in range(len(parts), 0, -1):
        found = _CAPABILITY_MODULES.get(".".join(parts[:n]))
        if found:
            return found
    return None


def _os_capability(attribute: str) -> str | None:
    if attribute in _OS_FUNCTIONS:
        return _OS_FUNCTIONS[attribute]
    for prefix, capability in _OS_PREFIXES.items():
        if attribute.startswith(prefix):
            return capability
    return None


def _module_attribute(name: str) -> str | None:
    """The module an attribute of this name is taken to be ("_os" -> "os"), if any."""
    return _MODULE_ATTRIBUTES.get(name.strip("_"))


def _module_path(path: str) -> str:
    """A dotted path from its last part that names a sensitive module: "shutil.os.sep" -> "os.sep"."""
    parts = path.split(".")
    for index in range(len(parts) - 1, -1, -1):
        module = _module_attribute(parts[index])
        if module:
            return ".".join([module, *parts[index + 1 :]])
    return path


def _attribute_capability(module: str, attribute: str) -> str | None:
    """The capability of reading module.attribute (module: the real module path)."""
    if module in _OS_MODULES and _os_capability(attribute):
        return _os_capability(attribute)
    if module == "builtins" and attribute in _CODE_BUILTINS:
        return attribute
    return (
        _MODULE_FUNCTIONS.get(f"{module}.{attribute}")
        or _DYNAMIC_ATTRIBUTES.get(attribute)
        or _capability_of_module(f"{module}.{attribute}")
    )


def _path_capability(path: str) -> str | None:
    """The capability of a module path: "os.system" -> "os.system", "ctypes" -> "ctypes"."""
    module, _, attribute = path.rpartition(".")
    return _attribute_capability(module, attribute) if module else _capability_of_module(path)


def _key_capability(name: str) -> str | None:
    """The capability of looking `name` up dynamically (getattr, attrgetter) on an unknown
    object, which may be a module passed around: getattr(x, "system") may be os.system."""
    if name in _CODE_BUILTINS:
        return name
    if name in _INTROSPECTION:
        return f"introspection ({name})"
    return _os_capability(name) or _DYNAMIC_ATTRIBUTES.get(name)


def _is_call_of(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _plain_arguments(node: ast.Call, count: int) -> bool:
    """The call has at least `count` positional arguments and no unpacking."""
    return len(node.args) >= count and not any(isinstance(a, ast.Starred) for a in node.args)


def _read(node: ast.AST, texts: dict[int, str]) -> tuple[ast.expr, str] | None:
    """(x, "name") when node reads attribute `name` of x: x.name, getattr(x, "name"[, default])."""
    if isinstance(node, ast.Attribute):
        return node.value, node.attr
    if _is_call_of(node, "getattr") and _plain_arguments(node, 2) and id(node.args[1]) in texts:
        return node.args[0], texts[id(node.args[1])]
    return None


def _folded_text(node: ast.AST, texts: dict[int, str]) -> str | None:
    """The text a string expression always has: a literal, "a" + "b", f"{'a'}b", "".join(["a", "b"])."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    separator = ""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts: list[ast.AST] = [node.left, node.right]
    elif isinstance(node, ast.JoinedStr):
        parts = [
            v.value if isinstance(v, ast.FormattedValue) and v.conversion == -1 and v.format_spec is None else v
            for v in node.values
        ]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and id(node.func.value) in texts
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], (ast.List, ast.Tuple))
    ):
        separator = texts[id(node.func.value)]
        parts = list(node.args[0].elts)
    else:
        return None
    if any(id(part) not in texts for part in parts):
        return None
    text = separator.join(texts[id(part)] for part in parts)
    return text if len(text) <= _MAX_FOLDED else None


def _fold(nodes: list[ast.AST], aliases: dict[str, str]) -> tuple[dict[int, str], dict[int, str]]:
    """By node id: (string expressions -> their constant text, expressions -> the module path
    they name). Built children first (a node comes after its parent in ast.walk order), so
    without recursion: generated code may nest deeper than Python's recursion limit."""
    texts: dict[int, str] = {}
    paths: dict[int, str] = {}
    for node in reversed(nodes):
        text = _folded_text(node, texts)
        if text is not None:
            texts[id(node)] = text
        path = None
        if isinstance(node, ast.Name):
            real = "builtins" if node.id == "__builtins__" else aliases.get(node.id)
            path = _module_path(real) if real else None
        elif (read := _read(node, texts)) is not None:
            base, name = read
            base_path = paths.get(id(base))
            path = _module_attribute(name) or (f"{base_path}.{name}" if base_path else None)
        if path is not None:
            paths[id(node)] = path
    return texts, paths


def _nodes(tree: ast.Module, skip: frozenset[int] = frozenset()) -> list[ast.AST]:
    """Every node of the module but those of the top-level statements at indices `skip`."""
    return [node for index, statement in enumerate(tree.body) if index not in skip for node in ast.walk(statement)]


def _aliases(nodes: Iterable[ast.AST]) -> dict[str, str]:
    """Names bound by imports -> what they name ("_poet_os" -> "os", "run" -> "subprocess.run"),
    whatever their scope (conservative: a local name shadowing an alias still counts as it)."""
    aliases: dict[str, str] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.partition(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _capabilities(nodes: list[ast.AST], aliases: dict[str, str]) -> dict[str, int]:
    """Forbidden capabilities these nodes use -> first line using each."""
    found: dict[str, int] = {}

    def use(capability: str | None, node: ast.AST) -> None:
        if capability and capability not in found:
            found[capability] = getattr(node, "lineno", 0)

    texts, paths = _fold(nodes, aliases)
    read_from: set[int] = set()  # x in x.name or getattr(x, "name"): read from, not used as a value
    called: set[int] = set()  # f in f(...)
    for node in nodes:  # a parent comes before its children
        if isinstance(node, ast.Call):
            called.add(id(node.func))
        read = _read(node, texts)
        if read is not None:
            base, name = read
            read_from.add(id(base))
            path = paths.get(id(node))
            use(_path_capability(path) if path else None, node)
            use(_DYNAMIC_ATTRIBUTES.get(name), node)
            if name in _INTROSPECTION:
                use(f"introspection ({name})", node)
            if isinstance(node, ast.Call):  # getattr(x, "system"): x may be os passed around
                use(_key_capability(name), node)
            if id(base) in paths:
                if name in ("__dict__", "__getattribute__"):
                    use(f"namespace lookup ({paths[id(base)]}.{name})", node)
                if path in _SENSITIVE_MODULES and id(node) not in read_from:
                    use(f"{path} module used as a value", node)

        if isinstance(node, ast.Import):
            for alias in node.names:
                use(_capability_of_module(alias.name), node)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module if node.level == 0 else ""
            for alias in node.names:
                if module:
                    use(_capability_of_module(module), node)
                    use(_path_capability(_module_path(f"{module}.{alias.name}")), node)
                    if alias.name == "*" and module in _SENSITIVE_MODULES:
                        use(f"{module}.*", node)
                if alias.name in _DYNAMIC_ATTRIBUTES:
                    use(_DYNAMIC_ATTRIBUTES[alias.name], node)
        elif isinstance(node, ast.Constant) and node.value in ("__builtins__", "__import__"):
            use(node.value, node)
        elif isinstance(node, ast.Name):
            if node.id in _CODE_BUILTINS:
                use(node.id, node)
            elif node.id == "__builtins__":
                use("__builtins__", node)
            elif node.id in ("globals", "locals"):
                use(f"namespace lookup ({node.id}())", node)
            elif node.id in ("getattr", "vars") and id(node) not in called:
                use(f"{node.id} used as a value", node)
            elif node.id in aliases and isinstance(node.ctx, ast.Load) and id(node) not in read_from:
                real = paths[id(node)]
                if real in _SENSITIVE_MODULES:
                    use(f"{real} module used as a value", node)
                else:
                    use(_path_capability(real), node)
        elif _is_call_of(node, "getattr"):
            if not _plain_arguments(node, 2):
                use("dynamic attribute (getattr with unpacked arguments)", node)
            elif id(node.args[1]) not in texts and id(node.args[0]) in paths:
                use(f"dynamic attribute of {paths[id(node.args[0])]}", node)
        elif _is_call_of(node, "vars"):
            if not _plain_arguments(node, 1) or id(node.args[0]) in paths:
                use("namespace lookup (vars())", node)
        elif isinstance(node, ast.Subscript) and texts.get(id(node.slice)) in _CODE_BUILTINS:
            use(texts[id(node.slice)], node)

        lookup = paths.get(id(node), "").lstrip("_")
        if lookup in _OPERATOR_LOOKUPS and id(node) not in called:
            use(f"{lookup} used as a value", node)
        if isinstance(node, ast.Call) and paths.get(id(node.func), "").lstrip("_") in _OPERATOR_LOOKUPS:
            function = paths[id(node.func)].lstrip("_")
            keys = node.args[:1] if function.endswith("methodcaller") else node.args
            for key in keys:
                text = texts.get(id(key))
                for part in text.split(".") if text is not None else [None]:
                    if part is None or _module_attribute(part):
                        use(f"dynamic attribute ({function})", node)
                    else:
                        use(_key_capability(part), node)
        if not isinstance(node, ast.Constant) and id(node) in texts:
            text = texts[id(node)]
            if text in _FORBIDDEN_NAMES or _module_attribute(text):
                use(f"computed name {text!r}", node)
    return found


def emitter_block(tree: ast.Module, source: str, *, whole: bool = False) -> frozenset[int]:
    """Indices in tree.body of the canonical emitter blocks (a module enhanced function by
    function may hold several copies), or empty when there is none.

    A block counts only as whole top-level statements whose source lines are exactly
    _emitter.CANONICAL. `whole`: source is "" and tree the module's own (its statements
    are compared by their unparsed text instead, for callers without the source).
    """
    if whole:
        return _emitter_block_by_tree(tree)
    canonical_lines = _emitter.CANONICAL.split("\n")
    first = canonical_lines[0]
    lines = [line[:-1] if line.endswith("\r") else line for line in source.split("\n")]
    body = tree.body
    found: set[int] = set()
    for index, statement in enumerate(body):
        start = statement.lineno - 1
        if statement.col_offset or start >= len(lines) or lines[start] != first:
            continue
        if getattr(statement, "decorator_list", None):
            continue  # a decorator line would precede the canonical first line
        end = start + len(canonical_lines)
        if lines[start:end] != canonical_lines:
            continue
        last = index
        while last + 1 < len(body) and body[last + 1].lineno <= end:
            last += 1
        if body[last].end_lineno == end and (last + 1 == len(body) or body[last + 1].lineno > end):
            found.update(range(index, last + 1))
    return frozenset(found)


def _emitter_block_by_tree(tree: ast.Module) -> frozenset[int]:
    canonical = [ast.dump(s) for s in parse_ast(_emitter.CANONICAL).body]
    body = [ast.dump(s) for s in tree.body]
    found: set[int] = set()
    for index in range(len(body) - len(canonical) + 1):
        if body[index : index + len(canonical)] == canonical:
            found.update(range(index, index + len(canonical)))
    return frozenset(found)


def emitter_names() -> frozenset[str]:
    """Every top-level name the canonical emitter block binds."""
    return _EMITTER_BOUND


_EMITTER_PRIVATE_PREFIX = "_poet_ev_"


def _emitter_names() -> tuple[frozenset[str], dict[str, str]]:
    """(every top-level name the canonical block binds, its module aliases -> modules)."""
    bound: set[str] = set()
    modules: dict[str, str] = {}
    for node in ast.walk(parse_ast(_emitter.CANONICAL)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    modules[a.asname] = a.name
    for node in parse_ast(_emitter.CANONICAL).body:
        statements = [node]
        if isinstance(node, ast.Try):  # try: import resource ... except ImportError: ... = None
            statements = [*node.body, *(s for h in node.handlers for s in h.body)]
        for statement in statements:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(statement.name)
            elif isinstance(statement, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).partition(".")[0] for a in statement.names)
            else:
                for sub in ast.walk(statement):
                    if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                        bound.add(sub.id)
    return frozenset(bound), {k: v for k, v in modules.items() if k in bound}


_EMITTER_BOUND, _EMITTER_MODULES = _emitter_names()
_EMITTER_ALIASES = _aliases(ast.walk(parse_ast(_emitter.CANONICAL)))
"""Other code may read these names, except the private `_poet_ev_*` helpers, and may
import the same module under the same alias (`import os as _poet_os`), but never
rebind them otherwise: the block's network code would then run code of its choosing."""


def _check_emitter_names(nodes: list[ast.AST]) -> None:
    """Outside the block, no code rebinds an emitter name or reads a private one."""
    for node in nodes:
        names: list[tuple[str, bool]] = []
        if isinstance(node, ast.Name):
            names.append((node.id, not isinstance(node.ctx, ast.Load)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.name, True))
        elif isinstance(node, ast.Import):
            names += [
                ((a.asname or a.name).partition(".")[0], _EMITTER_MODULES.get(a.asname or "") != a.name)
                for a in node.names
            ]
        elif isinstance(node, ast.ImportFrom):
            names += [(a.asname or a.name, True) for a in node.names]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names += [(n, True) for n in node.names]
        elif isinstance(node, ast.Attribute):
            names.append((node.attr, False))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in _EMITTER_BOUND:
            names.append((node.value, False))
        for name, binds in names:
            if name not in _EMITTER_BOUND:
                continue
            if binds:
                raise GateError(
                    "capability", f"line {node.lineno}: code outside the event emitter rebinds its name {name!r}"
                )
            if name.startswith(_EMITTER_PRIVATE_PREFIX):
                raise GateError(
                    "capability", f"line {node.lineno}: code outside the event emitter uses its internal {name!r}"
                )


def check_capabilities(
    original: ast.Module, generated: ast.Module, exempt: frozenset[int], *, emitter: bool | None = None
) -> None:
    """GateError("capability") when the generated module, but for its top-level
    statements at `exempt` (the emitter block), uses a capability the original
    does not. `emitter`: whether the module holds the emitter block (default: it
    does when something is exempt); its names are then reserved."""
    original_nodes = _nodes(original)
    allowed = _capabilities(original_nodes, _aliases(original_nodes))
    nodes = _nodes(generated, exempt)
    aliases = _aliases(nodes)
    if bool(exempt) if emitter is None else emitter:
        # The block's imports are aliases too: code elsewhere cannot use them unseen.
        aliases = {**_EMITTER_ALIASES, **aliases}
        # First, for the precise message: globals()["_poet_ev_send"] is also a namespace lookup.
        _check_emitter_names(nodes)
    used = _capabilities(nodes, aliases)
    new = sorted((line, capability) for capability, line in used.items() if capability not in allowed)
    if new:
        described = "; ".join(f"{capability} (line {line})" for line, capability in new)
        raise GateError("capability", f"the generated code uses what the original does not: {described}")
