"""Perceive: the annotation forms the generated argument checks understand.

Policy (see _typecheck): reject only what is clearly wrong, never what the original
would accept in practice."""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from types import MappingProxyType

import pytest

SOURCE = '''
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Literal, Mapping, Optional
from typing import Sequence, Set, Tuple, Union
import typing as t


def mode(m: Literal["fast", "safe"]) -> str:
    return m


def level(n: Literal[1, 2, -3], flag: Literal[True] = True) -> int:
    return n


def maybe(m: Optional[Literal["a", "b"]], x: int | None, y: "str | None" = "d") -> str:
    return str(m)


def mixed(v: Union[int, Literal["auto"]], w: Literal["x"] | float = 1.5) -> str:
    return str(v)


def lists(a: list, b: List[int], c: list[str] | None = None) -> int:
    return len(a)


def tuples(a: tuple, b: Tuple[int, ...], c: tuple[int, str], d: tuple[()] = ()) -> int:
    return len(a)


def dicts(a: dict, b: Dict[str, int], c: Mapping[str, float], d: t.MutableMapping = None) -> int:
    return len(a)


def sets(a: set, b: Set[int], c: FrozenSet[str], d: frozenset = frozenset()) -> int:
    return len(a)


def abstract(s: Sequence[int], i: Iterable[str], it: Iterator[int] = iter(())) -> int:
    return len(s)


def calls(f: Callable[[int], int], g: t.Callable = print, h: Any = None, k: "Unknown" = None) -> int:
    return f(1)


def defaults(x: int = None, s: str = 0, n: float = "auto", l: list = "all") -> str:
    return str(x)


def returns_mode(m) -> Literal["ok", "error"]:
    return m


def returns_seq(x) -> Sequence[int]:
    return x
'''


@pytest.fixture
def module(enhance):
    _, enhanced = enhance(SOURCE, "mode")
    return enhanced


@pytest.fixture
def safe(enhance):
    _, enhanced = enhance(SOURCE, "mode", optimize_for="safety")
    return enhanced


def _module_for(enhance, name: str, **spec):
    return enhance(SOURCE, name, **spec)[1]


def _rejects(function, *args, message: str, **kwargs) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        function(*args, **kwargs)


def test_literal_values(enhance) -> None:
    m = _module_for(enhance, "mode")
    assert m.mode("fast") == "fast" and m.mode("safe") == "safe"
    _rejects(m.mode, "turbo", message="mode() argument 'm' must be one of 'fast', 'safe', not 'turbo'")
    _rejects(m.mode, 1, message="must be one of 'fast', 'safe', not 1")
    _rejects(m.mode, None, message="not None")
    _rejects(m.mode, "x" * 200, message="not '" + "x" * 76 + "...")  # long values are cut


def test_literal_values_keep_their_type(enhance) -> None:
    import enum

    m = _module_for(enhance, "level")
    assert m.level(1) == 1 and m.level(-3) == -3
    _rejects(m.level, True, message="'n' must be one of 1, 2, -3, not True")  # bool is not 1 here
    _rejects(m.level, "1", message="not '1'")
    _rejects(m.level, 1.0, message="not 1.0")
    _rejects(m.level, 1, flag=1, message="'flag' must be one of True, not 1")

    class Mode(str, enum.Enum):
        FAST = "fast"

    assert _module_for(enhance, "mode").mode(Mode.FAST) is Mode.FAST  # a str subclass equal to it


def test_literal_results(enhance) -> None:
    m = _module_for(enhance, "returns_mode")
    assert m.returns_mode("ok") == "ok"
    with pytest.raises(TypeError, match=re.escape("returns_mode() must return one of 'ok', 'error', not 'fine'")):
        m.returns_mode("fine")


def test_optional_and_none_unions(enhance) -> None:
    m = _module_for(enhance, "maybe")
    assert m.maybe(None, None) == "None" and m.maybe("a", 1, None) == "a"
    _rejects(m.maybe, "c", 1, message="'m' must be one of 'a', 'b', None, not 'c'")
    _rejects(m.maybe, "a", "1", message="'x' must be int | None, not str")
    _rejects(m.maybe, "a", 1, 2, message="'y' must be 'str | None', not int")


def test_unions_with_literals(enhance) -> None:
    m = _module_for(enhance, "mixed")
    assert m.mixed(3) == "3" and m.mixed("auto") == "auto"
    assert m.mixed(1, "x") == "1" and m.mixed(1, 2) == "1"
    _rejects(m.mixed, "manual", message="'v' must be Union[int, Literal['auto']], not str")
    _rejects(m.mixed, 1, "y", message="'w' must be Literal['x'] | float, not str")


def test_lists_accept_any_non_text_iterable(enhance) -> None:
    m = _module_for(enhance, "lists")
    assert m.lists([1], [1, 2]) == 1
    assert m.lists((1, 2), (1,), ("a",)) == 2  # tuples where lists are annotated: common, and fine
    assert m.lists(deque([1]), range(3)) == 1
    assert m.lists({"k": 1}.keys(), [1]) == 1
    _rejects(m.lists, "abc", [1], message="'a' must be list, not str")
    _rejects(m.lists, [1], b"12", message="'b' must be List[int], not bytes")
    _rejects(m.lists, [1], None, message="'b' must be List[int], not NoneType")
    _rejects(m.lists, [1], 5, message="not int")
    _rejects(m.lists, [1], [1], "ab", message="'c' must be list[str] | None, not str")


def test_numpy_arrays_pass_list_and_sequence_annotations(enhance) -> None:
    np = pytest.importorskip("numpy")
    m = _module_for(enhance, "lists", optimize_for="safety")
    assert m.lists(np.array([1, 2]), np.array([1, 2])) == 2
    a = _module_for(enhance, "abstract", optimize_for="safety")
    assert a.abstract(np.array([1, 2]), ["x"]) == 2


def test_element_checks_only_when_enabled(enhance) -> None:
    reliable = _module_for(enhance, "lists")
    safe = _module_for(enhance, "lists", optimize_for="safety")
    assert reliable.lists([1], ["x"]) == 1  # element checks are off by default
    _rejects(safe.lists, [1], ["x"], message="'b' must be List[int], not list")
    _rejects(safe.lists, [1], (1, "x"), message="'b' must be List[int], not tuple")
    assert safe.lists([1], (1, 2), {"a", "b"}) == 1


def test_element_checks_never_consume_iterators(enhance) -> None:
    safe = _module_for(enhance, "lists", optimize_for="safety")
    items = iter([1, 2, 3])
    assert safe.lists([0], items) == 1
    assert list(items) == [1, 2, 3]  # untouched: the original gets every item
    generator = (x for x in ["not", "ints"])
    assert safe.lists([0], generator) == 1 and next(generator) == "not"


def test_tuples(enhance) -> None:
    m = _module_for(enhance, "tuples")
    assert m.tuples((1,), (1, 2), (1, "a")) == 1
    assert m.tuples([1, 2], [1], [1, "a"]) == 2  # JSON gives lists where tuples are annotated
    _rejects(m.tuples, "ab", (1,), (1, "a"), message="'a' must be tuple, not str")
    _rejects(m.tuples, (1,), 3, (1, "a"), message="'b' must be Tuple[int, ...], not int")
    safe = _module_for(enhance, "tuples", optimize_for="safety")
    assert safe.tuples((1,), (1, 2), [1, "a"], ()) == 1
    _rejects(safe.tuples, (1,), (1, "x"), (1, "a"), message="'b' must be Tuple[int, ...]")
    _rejects(safe.tuples, (1,), (1,), (1, 2), message="'c' must be tuple[int, str]")
    _rejects(safe.tuples, (1,), (1,), (1, "a", 3), message="'c' must be tuple[int, str]")
    _rejects(safe.tuples, (1,), (1,), (1, "a"), (1,), message="'d' must be tuple[()]")


def test_dicts_accept_any_mapping(enhance) -> None:
    m = _module_for(enhance, "dicts")
    assert m.dicts({}, {"a": 1}, {"x": 1.5}) == 0
    assert m.dicts(OrderedDict(), MappingProxyType({"a": 1}), MappingProxyType({})) == 0
    _rejects(m.dicts, [("a", 1)], {}, {}, message="'a' must be dict, not list")
    _rejects(m.dicts, {}, {}, "x", message="'c' must be Mapping[str, float], not str")
    _rejects(m.dicts, {}, {}, {}, 3, message="'d' must be t.MutableMapping, not int")
    safe = _module_for(enhance, "dicts", optimize_for="safety")
    _rejects(safe.dicts, {}, {"a": "1"}, {}, message="'b' must be Dict[str, int]")
    _rejects(safe.dicts, {}, {1: 1}, {}, message="'b' must be Dict[str, int]")
    assert safe.dicts({}, {"a": 1}, {"x": 2}) == 0


def test_sets(enhance) -> None:
    m = _module_for(enhance, "sets")
    assert m.sets({1}, {1}, frozenset({"a"})) == 1
    assert m.sets([1], (1,), {"a"}) == 1  # membership and iteration work on these too
    _rejects(m.sets, "ab", {1}, {"a"}, message="'a' must be set, not str")
    safe = _module_for(enhance, "sets", optimize_for="safety")
    _rejects(safe.sets, {1}, {"x"}, {"a"}, message="'b' must be Set[int]")


def test_abstract_collections(enhance) -> None:
    m = _module_for(enhance, "abstract")
    assert m.abstract([1], ["a"]) == 1 and m.abstract((1, 2), "abc") == 2  # text is an Iterable[str]
    assert m.abstract(range(3), iter(["a"]), iter([1])) == 3
    assert m.abstract("ab", {"a"}) == 2  # str is a Sequence: not rejected
    _rejects(m.abstract, {1: 2}, [], message="'s' must be Sequence[int], not dict")
    _rejects(m.abstract, {1, 2}, [], message="'s' must be Sequence[int], not set")
    _rejects(m.abstract, 5, [], message="'s' must be Sequence[int], not int")
    _rejects(m.abstract, [1], 5, message="'i' must be Iterable[str], not int")
    _rejects(m.abstract, [1], [], [1], message="'it' must be Iterator[int], not list")
    safe = _module_for(enhance, "abstract", optimize_for="safety")
    _rejects(safe.abstract, [1, "x"], [], message="'s' must be Sequence[int], not list")
    items = iter(["a", 1])
    assert safe.abstract([1], items) == 1 and list(items) == ["a", 1]  # iterators are not consumed


def test_abstract_results(enhance) -> None:
    m = _module_for(enhance, "returns_seq")
    assert m.returns_seq((1, 2)) == (1, 2)
    with pytest.raises(TypeError, match=re.escape("returns_seq() must return Sequence[int], not set")):
        m.returns_seq({1})


def test_callables_any_and_unknown(enhance) -> None:
    m = _module_for(enhance, "calls")
    assert m.calls(abs) == 1 and m.calls(lambda x: x, len, object(), object()) == 1
    _rejects(m.calls, 3, message="'f' must be Callable[[int], int], not int")
    _rejects(m.calls, abs, "print", message="'g' must be t.Callable, not str")


def test_constant_defaults_are_always_accepted(enhance) -> None:
    m = _module_for(enhance, "defaults")
    assert m.defaults() == "None"  # x: int = None, s: str = 0, n: float = "auto", l: list = "all"
    assert m.defaults(1, "s", 2.5, [1]) == "1"
    assert m.defaults(None, 0, "auto", "all") == "None"
    _rejects(m.defaults, "1", message="'x' must be int, not str")
    _rejects(m.defaults, 1, 1, message="'s' must be str, not int")  # only the default itself
    _rejects(m.defaults, 1, "s", "manual", message="'n' must be float, not str")
    _rejects(m.defaults, 1, "s", 1.0, "none", message="'l' must be list, not str")


def test_collections_abc_imports_are_not_checked_yet(enhance) -> None:
    # collections.abc names are not resolved by the analysis (only typing's are): no check.
    source = "from collections.abc import Sequence\n\n\ndef f(s: Sequence[int]) -> int:\n    return 1\n"
    _, m = enhance(source, "f")
    assert m.f(5) == 1
