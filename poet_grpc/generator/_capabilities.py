"""The capability scan of the gate: which dangerous capabilities a module's code
uses (code execution, processes, network, reaching other code's namespaces), and
the event emitter's exemption, which only its exact canonical text gets.

A static scan, not a proof and not the security boundary (that is the sandbox, see
poet_grpc.sandbox): it keeps generated code from gaining, in a way a reviewer
would flag, a capability the original does not have.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from poet_grpc.generator import _emitter
from poet_grpc.generator._errors import GateError
from poet_grpc.generator._parsing import parse as parse_ast

_CODE_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "breakpoint"})
"""Builtins that run or load code: a capability when read at all (called or passed on)."""

_OS_FUNCTIONS = {"system": "os.system", "popen": "os.popen"}
_OS_PREFIXES = {"exec": "os.exec*", "spawn": "os.spawn*", "posix_spawn": "os.spawn*"}
_OS_MODULES = frozenset({"os", "posix", "nt"})

_CAPABILITY_MODULES = {
    "subprocess": "subprocess",
    "_posixsubprocess": "subprocess",
    "pty": "pty",
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
}
"""Importing these modules (or anything from them) is the capability named."""

_DYNAMIC_ATTRIBUTES = {
    "import_module": "importlib.import_module",
    "create_subprocess_exec": "subprocess",
    "create_subprocess_shell": "subprocess",
    "open_connection": "socket",
    "create_connection": "socket",
    "urlopen": "urllib",
}
"""Attribute names that are the capability whatever object they are read from."""

_INTROSPECTION = frozenset(
    {"__subclasses__", "__globals__", "__code__", "__builtins__", "f_globals", "f_builtins", "f_locals"}
)
"""Attributes that reach other code's namespaces (sandbox escapes, hidden builtins)."""

_SENSITIVE_MODULES = _OS_MODULES | {"builtins", "importlib", "sys", "subprocess", "socket"}
"""Modules whose alias, passed around as a value, hides what is done with it."""


def _capability_of_module(module: str) -> str | None:
    parts = module.split(".")
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


def _attribute_capability(module: str, attribute: str) -> str | None:
    """The capability of reading module.attribute (module: the real module name)."""
    if module in _OS_MODULES:
        return _os_capability(attribute)
    if module == "builtins" and attribute in _CODE_BUILTINS:
        return attribute
    if module == "importlib" and attribute == "import_module":
        return "importlib.import_module"
    if module == "sys" and attribute == "modules":
        return "sys.modules"
    return _DYNAMIC_ATTRIBUTES.get(attribute) or _capability_of_module(f"{module}.{attribute}")


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

    attribute_bases: set[int] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                use(_capability_of_module(alias.name), node)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module if node.level == 0 else ""
            for alias in node.names:
                if module:
                    use(_capability_of_module(module), node)
                    use(_attribute_capability(module, alias.name), node)
                    if alias.name == "*" and module in _SENSITIVE_MODULES:
                        use(f"{module}.*", node)
                if alias.name in _DYNAMIC_ATTRIBUTES:
                    use(_DYNAMIC_ATTRIBUTES[alias.name], node)
        elif isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name):
                attribute_bases.add(id(base))
                module = aliases.get(base.id)
                if base.id == "__builtins__":
                    module = "builtins"
                if module is not None:
                    use(_attribute_capability(module, node.attr), node)
                    continue
            use(_DYNAMIC_ATTRIBUTES.get(node.attr), node)
            if node.attr in _INTROSPECTION:
                use(f"introspection ({node.attr})", node)
        elif isinstance(node, ast.Constant) and node.value in ("__builtins__", "__import__"):
            use(node.value, node)
        elif isinstance(node, ast.Name):
            if node.id in _CODE_BUILTINS:
                use(node.id, node)
            elif node.id == "__builtins__":
                use("__builtins__", node)
            elif node.id in aliases and isinstance(node.ctx, ast.Load) and id(node) not in attribute_bases:
                real = aliases[node.id]
                module, _, attribute = real.rpartition(".")
                if real in _SENSITIVE_MODULES:
                    use(f"{real} module used as a value", node)
                elif module:
                    use(_attribute_capability(module, attribute), node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            if len(node.args) < 2:
                continue
            target, key = node.args[0], node.args[1]
            module = aliases.get(target.id) if isinstance(target, ast.Name) else None
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                attribute = key.value
                if module:
                    use(_attribute_capability(module, attribute), node)
                use(_os_capability(attribute), node)
                use(attribute if attribute in _CODE_BUILTINS else None, node)
                use(_DYNAMIC_ATTRIBUTES.get(attribute), node)
            elif module in _SENSITIVE_MODULES:
                use(f"dynamic attribute of {module}", node)
    return found


def emitter_block(tree: ast.Module, source: str) -> frozenset[int]:
    """Indices in tree.body of the canonical emitter block, or empty when it is absent.

    The block counts only as whole top-level statements whose source lines are
    exactly _emitter.CANONICAL; the first such occurrence is the one exempted.
    """
    canonical_lines = _emitter.CANONICAL.split("\n")
    first = canonical_lines[0]
    lines = [line[:-1] if line.endswith("\r") else line for line in source.split("\n")]
    body = tree.body
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
            return frozenset(range(index, last + 1))
    return frozenset()


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


def check_capabilities(original: ast.Module, generated: ast.Module, exempt: frozenset[int]) -> None:
    original_nodes = _nodes(original)
    allowed = _capabilities(original_nodes, _aliases(original_nodes))
    nodes = _nodes(generated, exempt)
    aliases = _aliases(nodes)
    if exempt:  # the block's imports are aliases too: code elsewhere cannot use them unseen
        aliases = {**_EMITTER_ALIASES, **aliases}
    used = _capabilities(nodes, aliases)
    new = sorted((line, capability) for capability, line in used.items() if capability not in allowed)
    if new:
        described = "; ".join(f"{capability} (line {line})" for line, capability in new)
        raise GateError("capability", f"the generated code uses what the original does not: {described}")
    if exempt:
        _check_emitter_names(nodes)
