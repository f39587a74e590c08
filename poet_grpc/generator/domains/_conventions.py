"""Signature conventions shared by the domains: which parameter names and annotations
a domain acts on. Everything here reads the AST; nothing runs the code.

Name convention (name_matches): a parameter matches a convention entry when its name,
lower-cased, equals the entry, ends with "_" + entry or starts with entry + "_"
(entry "amount" matches amount, total_amount and amount_due, not paramount).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable

from poet_grpc.generator.domains._types import Parameter, Target
from poet_grpc.generator._parsing import parse as parse_ast

NAME_MATCH_SOURCE = '''
def _poet_name_matches(name, conventions):
    """The name convention of the domains: equal to an entry, or entry + "_"... / ..."_" + entry."""
    lowered = name.lower()
    for entry in conventions:
        entry = str(entry).lower()
        if lowered == entry or lowered.endswith("_" + entry) or lowered.startswith(entry + "_"):
            return True
    return False
'''
"""The same rule for run time (keys of **kwargs and of mapping arguments)."""


def name_matches(name: str, conventions: Iterable[str]) -> bool:
    lowered = name.lower()
    for entry in conventions:
        entry = entry.lower()
        if lowered == entry or lowered.endswith("_" + entry) or lowered.startswith(entry + "_"):
            return True
    return False


def literal(value: object) -> str:
    """A string as a Python literal in double quotes, like the rest of the generated code."""
    return json.dumps(str(value))


def imports(tree: ast.Module) -> dict[str, str]:
    """Module-level import bindings: local name -> qualified name
    (`from decimal import Decimal as D` gives D -> decimal.Decimal; `import numpy as np`
    gives np -> numpy; `import collections.abc` gives collections -> collections)."""
    out: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    out[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    out[top] = top
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            for alias in stmt.names:
                if alias.name != "*":
                    out[alias.asname or alias.name] = f"{stmt.module}.{alias.name}"
    return out


def qualified(node: ast.expr, target: Target) -> str | None:
    """The qualified name an annotation names ("builtins.list", "typing.Sequence",
    "decimal.Decimal", "<module>.Record" for a class of the module), or None."""
    table = imports(target.tree)
    if isinstance(node, ast.Name):
        if node.id in table and _bound_once(node.id, target):
            return table[node.id]
        if target.scope.is_builtin(node.id):
            return f"builtins.{node.id}"
        if any(isinstance(s, ast.ClassDef) and s.name == node.id for s in target.tree.body) and _bound_once(
            node.id, target
        ):
            return f"<module>.{node.id}"
        return None
    if isinstance(node, ast.Attribute):
        base = qualified(node.value, target)
        if base is not None and not base.startswith(("builtins.", "<module>.")):
            return f"{base}.{node.attr}"
    return None


def _bound_once(name: str, target: Target) -> bool:
    """The module binds `name` by exactly one top-level statement (so its meaning is certain)."""
    count = 0
    for stmt in ast.walk(target.tree):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and stmt.name == name:
            count += 1
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            count += sum(1 for a in stmt.names if (a.asname or a.name.partition(".")[0]) == name)
        elif isinstance(stmt, ast.Name) and isinstance(stmt.ctx, ast.Store) and stmt.id == name:
            count += 1
    return count == 1 and not target.scope.star_import


def _parsed(node: ast.expr | None) -> ast.expr | None:
    """A string annotation's expression; other annotations as they are."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return parse_ast(node.value.strip(), mode="eval").body
        except SyntaxError:
            return None
    return node


def optional_parts(node: ast.expr | None, target: Target) -> tuple[list[ast.expr], bool]:
    """The members of a union annotation (Optional[X], Union[X, None], X | None) without
    None, and whether None was one of them; ([node], False) for anything else."""
    node = _parsed(node)
    if node is None:
        return [], False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, l_none = optional_parts(node.left, target)
        right, r_none = optional_parts(node.right, target)
        return left + right, l_none or r_none
    if isinstance(node, ast.Constant) and node.value is None:
        return [], True
    if isinstance(node, ast.Subscript):
        origin = qualified(node.value, target)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if origin in ("typing.Optional", "typing_extensions.Optional") and len(args) == 1:
            inner, _ = optional_parts(args[0], target)
            return inner, True
        if origin in ("typing.Union", "typing_extensions.Union"):
            members: list[ast.expr] = []
            has_none = False
            for arg in args:
                inner, none = optional_parts(arg, target)
                members += inner
                has_none = has_none or none
            return members, has_none
    return [node], False


def is_decimal(param: Parameter, target: Target) -> tuple[bool, bool]:
    """(annotated decimal.Decimal, also allows None): Decimal, decimal.Decimal,
    Optional[Decimal], Decimal | None, and their string forms."""
    members, none = optional_parts(param.annotation, target)
    if len(members) == 1 and qualified(members[0], target) == "decimal.Decimal":
        return True, none
    return False, False


_SEQUENCES = {
    "builtins.list",
    "builtins.tuple",
    "typing.List",
    "typing.Tuple",
    "typing.Sequence",
    "typing.MutableSequence",
    "collections.abc.Sequence",
    "collections.abc.MutableSequence",
}


def sequence_element(node: ast.expr | None, target: Target) -> ast.expr | None:
    """X for list[X], List[X], Sequence[X], tuple[X, ...] (typing or collections.abc); None otherwise."""
    node = _parsed(node)
    if not isinstance(node, ast.Subscript):
        return None
    origin = qualified(node.value, target)
    if origin not in _SEQUENCES:
        return None
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if origin in ("builtins.tuple", "typing.Tuple"):
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return _parsed(args[0])
        return None
    return _parsed(args[0]) if len(args) == 1 else None


def is_sequence(node: ast.expr | None, target: Target) -> bool:
    """Annotated as a list/tuple/Sequence, with or without an element type."""
    node = _parsed(node)
    if isinstance(node, ast.Subscript):
        return qualified(node.value, target) in _SEQUENCES
    return node is not None and qualified(node, target) in _SEQUENCES


def is_number_type(node: ast.expr | None, target: Target) -> bool:
    """int or float (the builtins)."""
    return node is not None and qualified(node, target) in ("builtins.int", "builtins.float")


_CONCRETE_BUILTINS = {"int", "float", "complex", "str", "bytes", "bool", "dict", "list", "tuple", "set", "frozenset"}
_CONCRETE_TYPING = {"typing.Dict", "typing.List", "typing.Tuple", "typing.Set", "typing.FrozenSet"}


def is_concrete(node: ast.expr | None, target: Target) -> bool:
    """The annotation names one concrete class that None is certainly not an instance of:
    a builtin value type, a typing container, or a class the module defines.
    Optional/Union, Any, object, TypeVars and unknown names are not concrete."""
    node = _parsed(node)
    if node is None:
        return False
    if isinstance(node, ast.Subscript):
        node = node.value
    name = qualified(node, target)
    if name is None:
        return False
    if name.startswith("builtins."):
        return name.removeprefix("builtins.") in _CONCRETE_BUILTINS
    return name in _CONCRETE_TYPING or name.startswith("<module>.")
