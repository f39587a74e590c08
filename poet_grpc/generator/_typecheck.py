"""Type checks derived from annotations, rendered as Python expressions (Perceive, Enforce).

Policy: a check NEVER rejects a value the original would accept in practice; it
rejects only what is clearly wrong. So only annotations whose meaning is certain
are checked (anything else gives no check), and collections are checked by what
code does with them, not by their exact class:

- `int` accepts integers (numbers.Integral) but not bool; `float` accepts any real
  number (int, float, Fraction, numpy scalars...) but not bool; `complex` likewise
  with numbers.Complex. A bool where a number is annotated is taken as a mistake.
- `bool` and `str` are isinstance checks; `bytes` also accepts bytearray and
  memoryview; `None` means `is None`.
- Concrete collections (`list`, `List[X]`, `tuple`, `Tuple[...]`, `set`, `Set[X]`,
  `frozenset`, `AbstractSet`, `MutableSet`, `Deque`) accept any iterable except
  text (str, bytes, bytearray, memoryview): a tuple, a numpy array, a dict view or
  a generator where a list is annotated is common and usually works, while text,
  None or a number there is a bug. `dict`, `Dict[K, V]`, `Mapping`,
  `MutableMapping`, `DefaultDict`, `OrderedDict`, `Counter` accept any
  collections.abc.Mapping.
- Abstract collections check their ABC only: `Iterable[X]` (text included),
  `Iterator[X]`, `Collection[X]`; `Sequence[X]`/`MutableSequence[X]` accept a
  collections.abc.Sequence or any sized collection that is neither a mapping nor a
  set (numpy arrays, pandas Series). `Callable[...]` is callable().
- `Literal[...]` (str, bytes, int, bool, None values) checks membership, with the
  value's type (Literal[1] does not take True or "1"); the message lists the
  allowed values. A Literal of anything else (enum members...) is not checked.
- `Optional[X]`, `Union[X, Y]`, `X | Y` accept what any member accepts; a union
  with one uncheckable member is not checked. `Annotated[X, ...]` is X. String
  annotations are checked as what they name.
- A parameter's constant default is always accepted (`x: int = None` takes None).
- A builtin name the module rebinds (a class called `int`, `from x import *`...)
  is not checked; typing names count only when imported from typing (or
  typing_extensions). `Any`, `object`, classes, TypeVars, protocols: no check.
- Elements are checked only when element checks are on (`check_element_types`),
  one expression deep, at O(n) cost, and never by consuming an iterator: a value
  that is an Iterator (a generator, a file) gets its container check only; a fixed
  tuple's length and positions are checked only on a Sequence.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from poet_grpc.generator._analysis import ModuleScope
from poet_grpc.generator._parsing import parse as parse_ast

_SIMPLE = {"bool": "bool", "str": "str", "bytes": "bytes, bytearray, memoryview"}
"""Kinds checked by isinstance alone -> the class (or classes) to test."""

_NUMERIC = {"int": "Integral", "float": "Real", "complex": "Complex"}
"""Kinds checked against numbers.<ABC>, excluding bool."""

_CONCRETE = {"list": "list", "tuple": "tuple", "set": "(set, frozenset)", "frozenset": "(set, frozenset)"}
"""Concrete collection kinds -> the fast-path classes; they accept any non-text iterable."""

_TEXT = "(str, bytes, bytearray, memoryview)"

_ABSTRACT = {
    "dict": "isinstance({v}, dict) or isinstance({v}, _poet_abc.Mapping)",
    "iterable": "isinstance({v}, _poet_abc.Iterable)",
    "iterator": "isinstance({v}, _poet_abc.Iterator)",
    "collection": "isinstance({v}, _poet_abc.Collection)",
    "sequence": (
        "isinstance({v}, _poet_abc.Sequence) or (isinstance({v}, _poet_abc.Collection)"
        " and not isinstance({v}, (_poet_abc.Mapping, _poet_abc.Set)))"
    ),
    "callable": "callable({v})",
}
"""Other collection kinds and callables -> their test (one `or` at most)."""

_BUILTIN_KINDS = frozenset(
    {"int", "float", "complex", "bool", "str", "bytes", "list", "dict", "tuple", "set", "frozenset"}
)
_TYPING_KINDS = {
    "List": "list",
    "Deque": "list",
    "Tuple": "tuple",
    "Set": "set",
    "FrozenSet": "frozenset",
    "AbstractSet": "set",
    "MutableSet": "set",
    "Dict": "dict",
    "DefaultDict": "dict",
    "OrderedDict": "dict",
    "Counter": "dict",
    "ChainMap": "dict",
    "Mapping": "dict",
    "MutableMapping": "dict",
    "Iterable": "iterable",
    "Iterator": "iterator",
    "Collection": "collection",
    "Sequence": "sequence",
    "MutableSequence": "sequence",
    "Callable": "callable",
    "Text": "str",
}
_ONE_ELEMENT = frozenset({"list", "set", "frozenset", "iterable", "collection", "sequence"})
_LITERAL_TYPES = ("str", "bytes", "int", "bool", "float")
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Check:
    """What an annotation allows, as far as it can be checked at run time."""

    kind: str
    """"int", "float", "complex", "bool", "str", "bytes", "none", "list", "tuple", "set",
    "frozenset", "dict", "iterable", "iterator", "collection", "sequence", "callable",
    "literal" or "union"."""
    items: tuple[Check | None, ...] = ()
    """Union members; one-element collections: (element,); dict: (key, value); fixed
    tuple: one per position. None where a part cannot be checked."""
    variadic: bool = True
    """For tuples: False when the annotation fixes the length (tuple[int, str])."""
    values: tuple[tuple[str, Any], ...] = ()
    """For literals: (type name, value) pairs, in annotation order (the type keeps
    Literal[1] and Literal[True] apart)."""

    def members(self) -> tuple[Check, ...]:
        return tuple(m for m in self.items if m is not None) if self.kind == "union" else (self,)


def translate(annotation: ast.expr | None, scope: ModuleScope, default: ast.expr | None = None) -> Check | None:
    """The check for an annotation, or None when it cannot be checked with certainty.

    `default`: the parameter's default expression; a constant default the check would
    reject (`x: int = None`) is accepted as well.
    """
    if annotation is None:
        return None
    check = _translate(annotation, scope, 0)
    if check is None or default is None:
        return check
    value = _constant(default)
    if value is _NOT_CONSTANT or _accepts_constant(check, value):
        return check
    extra = Check("none") if value is None else Check("literal", values=((type(value).__name__, value),))
    return _merge([*check.members(), extra])


def describe(check: Check, annotation: str) -> tuple[str, bool]:
    """(expected, show_value) for error messages: "one of 'a', 'b'" and True for a
    check of literal values only (the message then shows the rejected value itself),
    else the annotation as written and False (the message shows the value's type)."""
    members = check.members()
    if any(m.kind == "literal" for m in members) and all(m.kind in ("literal", "none") for m in members):
        shown = [repr(v) for m in members if m.kind == "literal" for _, v in m.values]
        if any(m.kind == "none" for m in members):
            shown.append("None")
        return "one of " + ", ".join(shown), True
    return annotation, False


# --- annotations -> checks ------------------------------------------------------------


def _translate(node: ast.expr, scope: ModuleScope, depth: int) -> Check | None:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(node, ast.Constant):
        if node.value is None:
            return Check("none")
        if isinstance(node.value, str):  # a string annotation: check what it names
            try:
                inner = parse_ast(node.value.strip(), mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                # Python never evaluates it at def time: one it cannot read is just unchecked.
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
    return Check(_TYPING_KINDS[name]) if name in _TYPING_KINDS else None  # Any, object, classes...


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
    origin = _resolve(node.value, scope) or ""
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if origin == "Optional" and len(args) == 1:
        return _union([args[0], ast.Constant(None)], scope, depth)
    if origin == "Union":
        return _union(args, scope, depth)
    if origin == "Annotated" and args:
        return _translate(args[0], scope, depth + 1)
    if origin == "Literal":
        values = _literal_values(args, scope, depth)
        if values is None:
            return None
        checks = [Check("none") if v is None else Check("literal", values=((type(v).__name__, v),)) for v in values]
        return _merge(checks)
    kind = _TYPING_KINDS.get(origin) or (origin if origin in _BUILTIN_KINDS else None)
    if kind in _ONE_ELEMENT and len(args) == 1:
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
    if kind in ("int", "float", "complex", "bool", "str", "bytes"):
        return None  # int[str] is not a type: no check
    if kind is not None:
        return Check(kind)  # Callable[[int], str], Iterator[int], dict[str] (invalid arity)...
    return None  # user generics, Type[...]...: no check


def _literal_values(args: list[ast.expr], scope: ModuleScope, depth: int) -> list[Any] | None:
    """The values of Literal[...] arguments (nested Literals flattened), or None when
    one is not a constant of a checkable type."""
    values: list[Any] = []
    for arg in args:
        if isinstance(arg, ast.Subscript) and _resolve(arg.value, scope) == "Literal" and depth < _MAX_DEPTH:
            inner = list(arg.slice.elts) if isinstance(arg.slice, ast.Tuple) else [arg.slice]
            nested = _literal_values(inner, scope, depth + 1)
            if nested is None:
                return None
            values += nested
            continue
        value = _constant(arg)
        if value is _NOT_CONSTANT or isinstance(value, float):  # Literal takes no floats
            return None
        values.append(value)
    return values


_NOT_CONSTANT = object()


def _constant(node: ast.expr) -> Any:
    """The value of a literal constant expression (None, str, bytes, int, bool, float,
    -number), else _NOT_CONSTANT."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant(node.operand)
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            return -inner
        return _NOT_CONSTANT
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or type(value).__name__ in _LITERAL_TYPES:
            return value
    return _NOT_CONSTANT


def _accepts_constant(check: Check, value: Any) -> bool:
    """Does the check certainly accept this constant? (False when unsure.)"""
    for m in check.members():
        if m.kind == "none" and value is None:
            return True
        if m.kind == "literal" and (type(value).__name__, value) in m.values:
            return True
        if isinstance(value, bool):
            if m.kind == "bool":
                return True
            continue
        if m.kind == "int" and isinstance(value, int):
            return True
        if m.kind in ("float", "complex") and isinstance(value, (int, float)):
            return True
        if m.kind == "str" and isinstance(value, str):
            return True
        if m.kind == "bytes" and isinstance(value, bytes):
            return True
    return False


def _items(element: Check | None) -> tuple[Check | None, ...]:
    return (element,) if element is not None else ()


def _union(parts: list[ast.expr], scope: ModuleScope, depth: int) -> Check | None:
    checks: list[Check] = []
    for part in parts:
        check = _translate(part, scope, depth + 1)
        if check is None:
            return None  # one member we cannot check: the whole union is unchecked
        checks += check.members()
    return _merge(checks)


def _merge(checks: list[Check]) -> Check:
    """One check accepting what any of `checks` accepts (literals merged into one)."""
    members: list[Check] = []
    values: list[tuple[str, Any]] = []
    for check in checks:
        for member in check.members():
            if member.kind == "literal":
                values += [v for v in member.values if v not in values]
            elif member not in members:
                members.append(member)
    if values:
        members.append(Check("literal", values=tuple(values)))
    return members[0] if len(members) == 1 else Check("union", tuple(members))


# --- rendering ----------------------------------------------------------------


def expression(check: Check, var: str, *, elements: bool, depth: int = 0) -> str:
    """A Python boolean expression: does `var` pass the check?

    At depth > 0 (inside another expression) the result is parenthesised when it
    is an `or` of several tests.
    """
    members = check.members()
    none = [f"{var} is None"] if any(m.kind == "none" for m in members) else []
    simple: list[str] = []
    other: list[str] = []
    for m in members:
        if m.kind in _NUMERIC:
            other.append(f"(isinstance({var}, _poet_numbers.{_NUMERIC[m.kind]}) and not isinstance({var}, bool))")
        elif m.kind in _SIMPLE:
            if _SIMPLE[m.kind] not in simple:
                simple.append(_SIMPLE[m.kind])
        elif m.kind == "literal":
            other += _literal_tests(m, var)
        elif m.kind in _CONCRETE or m.kind in _ABSTRACT:
            other.append(_collection(m, var, depth, elements))
    if simple:
        classes = ", ".join(simple)
        simple = [f"isinstance({var}, {classes if len(simple) == 1 and ',' not in classes else '(' + classes + ')'})"]
    parts = none + simple + other
    if len(parts) == 1:
        return parts[0]
    joined = " or ".join(parts)
    return f"({joined})" if depth else joined


def _literal_tests(check: Check, var: str) -> list[str]:
    by_type: dict[str, list[Any]] = {}
    for type_name, value in check.values:
        by_type.setdefault(type_name, []).append(value)
    tests = []
    for type_name in _LITERAL_TYPES:
        values = by_type.get(type_name)
        if not values:
            continue
        if type_name == "bool":
            tests += [f"{var} is {v!r}" for v in values]
            continue
        allowed = "(" + ", ".join(repr(v) for v in values) + ("," if len(values) == 1 else "") + ")"
        if type_name == "int":
            guard = f"isinstance({var}, _poet_numbers.Integral) and not isinstance({var}, bool)"
        elif type_name == "float":
            guard = f"isinstance({var}, _poet_numbers.Real) and not isinstance({var}, bool)"
        else:
            guard = f"isinstance({var}, {type_name})"
        tests.append(f"({guard} and {var} in {allowed})")
    return tests


def _has_elements(check: Check) -> bool:
    if check.kind in ("iterator", "callable"):
        return False
    return bool(check.items) or (check.kind == "tuple" and not check.variadic)


def _container_test(kind: str, var: str) -> str:
    if kind in _CONCRETE:
        fast = f"isinstance({var}, {_CONCRETE[kind]})"
        return f"{fast} or (isinstance({var}, _poet_abc.Iterable) and not isinstance({var}, {_TEXT}))"
    return _ABSTRACT[kind].format(v=var)


def _collection(check: Check, var: str, depth: int, elements: bool) -> str:
    head = _container_test(check.kind, var)
    if not (elements and _has_elements(check)):
        return f"({head})" if " or " in head else head
    n = depth + 1
    suffix = "" if n == 1 else str(n)
    if check.kind == "dict":
        key, value = check.items
        k, v = f"_poet_key{suffix}", f"_poet_value{suffix}"
        conds = [expression(c, name, elements=True, depth=n) for c, name in ((key, k), (value, v)) if c is not None]
        return f"(({head}) and all({' and '.join(conds)} for {k}, {v} in {var}.items()))"
    if check.kind == "tuple" and not check.variadic:
        conds = [f"len({var}) == {len(check.items)}"]
        for index, item in enumerate(check.items):
            if item is not None:
                conds.append(expression(item, f"{var}[{index}]", elements=True, depth=n))
        return f"(({head}) and (not isinstance({var}, _poet_abc.Sequence) or (" + " and ".join(conds) + ")))"
    (item,) = check.items
    name = f"_poet_item{suffix}"
    inner = expression(item, name, elements=True, depth=n)
    return f"(({head}) and (isinstance({var}, _poet_abc.Iterator) or all({inner} for {name} in {var})))"


def accepts_float(check: Check) -> bool:
    """The check lets a float through at the top level (so a finiteness check applies)."""
    return any(m.kind in ("float", "complex") for m in check.members())


def finite_expression(var: str) -> str:
    """Expression: `var` is not a NaN or infinite float."""
    return f"not isinstance({var}, float) or _poet_math.isfinite({var})"


def names_used(expr: str) -> frozenset[str]:
    """Global names an expression reads (to detect builtins the module rebinds)."""
    return frozenset(n.id for n in ast.walk(parse_ast(expr, mode="eval")) if isinstance(n, ast.Name))


def parameter_defaults(args: ast.arguments) -> dict[str, ast.expr]:
    """Parameter name -> its default expression, for the parameters that have one."""
    positional = [*args.posonlyargs, *args.args]
    found = {a.arg: d for a, d in zip(positional[len(positional) - len(args.defaults) :], args.defaults)}
    found.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
    return found
