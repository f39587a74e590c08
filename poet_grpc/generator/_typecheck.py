"""Type checks derived from simple annotations, rendered as Python expressions.

Only annotations whose meaning is certain are checked; anything else gives no
check, so a check never rejects a value the annotation allows:

- `int` accepts integers (numbers.Integral) but not bool; `float` accepts any real
  number (int, float, Fraction, numpy scalars...) but not bool; `complex` likewise
  with numbers.Complex. A bool where a number is annotated is taken as a mistake.
- `bool`, `str`, `list`, `dict`, `tuple`, `set`, `frozenset` are isinstance checks;
  `bytes` also accepts bytearray and memoryview; `None` means `is None`.
- `Optional[X]`, `Union[X, Y]`, `X | Y`, `List[X]`, `Dict[K, V]`, `Tuple[...]`,
  `Set[X]`, `FrozenSet[X]` from typing, the builtin generics (`list[int]`) and
  string annotations of these. A union with one uncheckable member is not checked.
- A builtin name the module rebinds (a class called `int`, `from x import *`...)
  is not checked; typing names count only when imported from typing.
- Parameterised containers check the container type; their elements only when
  element checks are on (`check_element_types`), one expression deep, at O(n) cost.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from poet_grpc.generator._analysis import ModuleScope

_SIMPLE = {
    "bool": "bool",
    "str": "str",
    "bytes": "bytes, bytearray, memoryview",
    "list": "list",
    "dict": "dict",
    "tuple": "tuple",
    "set": "set",
    "frozenset": "frozenset",
}
"""Kinds checked by isinstance alone -> the class (or classes) to test."""

_NUMERIC = {"int": "Integral", "float": "Real", "complex": "Complex"}
"""Kinds checked against numbers.<ABC>, excluding bool."""

_BUILTIN_KINDS = frozenset(_SIMPLE) | frozenset(_NUMERIC)
_TYPING_CONTAINERS = {"List": "list", "Dict": "dict", "Tuple": "tuple", "Set": "set", "FrozenSet": "frozenset"}
_TYPING_TEXT = {"Text": "str"}
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Check:
    """What an annotation allows, as far as it can be checked at run time."""

    kind: str
    """"int", "float", "complex", "none", a key of _SIMPLE, or "union"."""
    items: tuple[Check | None, ...] = ()
    """Union members; list/set/frozenset/variadic tuple: (element,); dict: (key, value);
    fixed tuple: one per position. None where a part cannot be checked."""
    variadic: bool = True
    """For tuples: False when the annotation fixes the length (tuple[int, str])."""

    def members(self) -> tuple[Check, ...]:
        return tuple(m for m in self.items if m is not None) if self.kind == "union" else (self,)


def translate(annotation: ast.expr | None, scope: ModuleScope) -> Check | None:
    """The check for an annotation, or None when it cannot be checked with certainty."""
    if annotation is None:
        return None
    return _translate(annotation, scope, 0)


def _translate(node: ast.expr, scope: ModuleScope, depth: int) -> Check | None:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(node, ast.Constant):
        if node.value is None:
            return Check("none")
        if isinstance(node.value, str):  # a string annotation: check what it names
            try:
                inner = ast.parse(node.value.strip(), mode="eval").body
            except SyntaxError:
                return None
            return _translate(inner, scope, depth + 1)
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right], scope, depth)
    if isinstance(node, ast.Subscript):
        return _generic(node, scope, depth)
    name = _resolve(node, scope)
    if name is None:
        return None
    if name in _BUILTIN_KINDS:
        return Check(name)
    if name in _TYPING_CONTAINERS:
        return Check(_TYPING_CONTAINERS[name])
    if name in _TYPING_TEXT:
        return Check(_TYPING_TEXT[name])
    return None  # Any, object, classes, TypeVars...: no check


def _resolve(node: ast.expr, scope: ModuleScope) -> str | None:
    """"int" for the builtin int, "Optional" for typing.Optional, ...; None otherwise."""
    if isinstance(node, ast.Name):
        if node.id in scope.typing_names:
            return scope.typing_names[node.id]
        if node.id in _BUILTIN_KINDS and scope.is_builtin(node.id):
            return node.id
        return None
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id in scope.typing_modules:
            return node.attr
    return None


def _generic(node: ast.Subscript, scope: ModuleScope, depth: int) -> Check | None:
    origin = _resolve(node.value, scope)
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if origin == "Optional" and len(args) == 1:
        return _union([args[0], ast.Constant(None)], scope, depth)
    if origin == "Union":
        return _union(args, scope, depth)
    kind = _TYPING_CONTAINERS.get(origin or "") or (origin if origin in _SIMPLE else None)
    if kind in ("list", "set", "frozenset") and len(args) == 1:
        return Check(kind, _items(_translate(args[0], scope, depth + 1)))
    if kind == "dict" and len(args) == 2:
        key, value = (_translate(a, scope, depth + 1) for a in args)
        return Check("dict", (key, value) if (key or value) else ())
    if kind == "tuple":
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return Check("tuple", _items(_translate(args[0], scope, depth + 1)))
        if len(args) == 1 and isinstance(args[0], ast.Tuple) and not args[0].elts:
            return Check("tuple", (), variadic=False)  # tuple[()]: the empty tuple
        if any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in args):
            return Check("tuple")
        return Check("tuple", tuple(_translate(a, scope, depth + 1) for a in args), variadic=False)
    if kind is not None:
        return Check(kind)  # e.g. dict[str] (invalid arity): container only
    return None  # Callable[...], Literal[...], user generics...: no check


def _items(element: Check | None) -> tuple[Check | None, ...]:
    return (element,) if element is not None else ()


def _union(parts: list[ast.expr], scope: ModuleScope, depth: int) -> Check | None:
    members: list[Check] = []
    for part in parts:
        check = _translate(part, scope, depth + 1)
        if check is None:
            return None  # one member we cannot check: the whole union is unchecked
        for member in check.members():
            if member not in members:
                members.append(member)
    return members[0] if len(members) == 1 else Check("union", tuple(members))


# --- rendering -------------------------------------------------------------


def expression(check: Check, var: str, *, elements: bool, depth: int = 0) -> str:
    """A Python boolean expression: does `var` pass the check?

    At depth > 0 (inside another expression) the result is parenthesised when it
    is an `or` of several tests.
    """
    members = check.members()
    none = [f"{var} is None"] if any(m.kind == "none" for m in members) else []
    simple: list[str] = []
    numeric: list[str] = []
    containers: list[str] = []
    for m in members:
        if m.kind in _NUMERIC:
            numeric.append(f"(isinstance({var}, _poet_numbers.{_NUMERIC[m.kind]}) and not isinstance({var}, bool))")
        elif m.kind in _SIMPLE:
            if elements and _has_elements(m):
                containers.append(_container(m, var, depth))
            elif _SIMPLE[m.kind] not in simple:
                simple.append(_SIMPLE[m.kind])
    if simple:
        classes = ", ".join(simple)
        simple = [f"isinstance({var}, {classes if len(simple) == 1 and ',' not in classes else '(' + classes + ')'})"]
    parts = none + simple + numeric + containers
    if len(parts) == 1:
        return parts[0]
    joined = " or ".join(parts)
    return f"({joined})" if depth else joined


def _has_elements(check: Check) -> bool:
    return bool(check.items) or (check.kind == "tuple" and not check.variadic)


def _container(check: Check, var: str, depth: int) -> str:
    n = depth + 1
    suffix = "" if n == 1 else str(n)
    head = f"isinstance({var}, {check.kind})"
    if check.kind == "dict":
        key, value = check.items
        k, v = f"_poet_key{suffix}", f"_poet_value{suffix}"
        conds = [expression(c, name, elements=True, depth=n) for c, name in ((key, k), (value, v)) if c is not None]
        return f"({head} and all({' and '.join(conds)} for {k}, {v} in {var}.items()))"
    if check.kind == "tuple" and not check.variadic:
        conds = [f"len({var}) == {len(check.items)}"]
        for index, item in enumerate(check.items):
            if item is not None:
                conds.append(expression(item, f"{var}[{index}]", elements=True, depth=n))
        return f"({head} and " + " and ".join(conds) + ")"
    (item,) = check.items
    name = f"_poet_item{suffix}"
    return f"({head} and all({expression(item, name, elements=True, depth=n)} for {name} in {var}))"


def accepts_float(check: Check) -> bool:
    """The check lets a float through at the top level (so a finiteness check applies)."""
    return any(m.kind in ("float", "complex") for m in check.members())


def finite_expression(var: str) -> str:
    """Expression: `var` is not a NaN or infinite float."""
    return f"not isinstance({var}, float) or _poet_math.isfinite({var})"


def names_used(expr: str) -> frozenset[str]:
    """Global names an expression reads (to detect builtins the module rebinds)."""
    return frozenset(n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name))
