"""The enhanced function has the original's exact signature and forwards arguments exactly."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest

SIGNATURES = {
    "mixed": "def f(a, b=2, *args, c, d=4, **kw):\n    return (a, b, args, c, d, kw)\n",
    "positional_only": "def f(a: int, b: str = 'x', /, c: float = 1.5, *, d: bool = False) -> tuple:\n"
    "    return (a, b, c, d)\n",
    "only_positional_only": "def f(a, /):\n    return a\n",
    "var_annotated": "def f(*args: int, **kwargs: str) -> None:\n    return None\n",
    "keyword_only": "def f(*, x: int, y: int = 0) -> int:\n    return x + y\n",
    "nested_generics": "from typing import Optional\n\n"
    "def f(data: dict[str, list[int]] | None = None, k: Optional[int] = None) -> list[tuple[int, str]]:\n"
    "    return []\n",
    "default_from_constant": "DEFAULT = (1, 2)\nSENTINEL = object()\n\n"
    "def f(x=DEFAULT, *, marker=SENTINEL, bucket=[]):\n    return x, marker, bucket\n",
    "future_annotations": "from __future__ import annotations\n\n"
    "def f(p: Point, scale: float = 1.0) -> Point:\n    return p\n\n"
    "class Point:\n    pass\n",
    "async": "import asyncio\n\nasync def f(x: int, *, delay: float = 0.0) -> int:\n"
    "    await asyncio.sleep(delay)\n    return x * 2\n",
    "no_parameters": "def f():\n    '''Nothing in, constant out.'''\n    return 42\n",
}


def _text(function, module) -> str:
    text = str(inspect.signature(function, follow_wrapped=False)).replace(module.__name__, "<module>")
    return re.sub(r" at 0x[0-9a-f]+", "", text)


@pytest.mark.parametrize("case", sorted(SIGNATURES))
def test_signature_docstring_and_wrapping_are_preserved(case: str, enhance) -> None:
    original_module, module = enhance(SIGNATURES[case], "f")
    original, enhanced = original_module.f, module.f
    assert enhanced is not module._poet_original_f
    # exactly the original as kept inside the generated module (same default objects)...
    assert inspect.signature(enhanced, follow_wrapped=False) == inspect.signature(module._poet_original_f)
    # ...and the same text as the original loaded on its own
    assert _text(enhanced, module) == _text(original, original_module)
    assert inspect.iscoroutinefunction(enhanced) == inspect.iscoroutinefunction(original)
    assert enhanced.__name__ == "f" and enhanced.__qualname__ == "f"
    assert enhanced.__doc__ == original.__doc__
    assert enhanced.__wrapped__ is module._poet_original_f
    assert enhanced.__annotations__ == original.__annotations__


def test_default_objects_are_the_originals(enhance) -> None:
    _, module = enhance(SIGNATURES["default_from_constant"], "f")
    x, marker, bucket = module.f()
    assert x is module.DEFAULT and marker is module.SENTINEL
    assert bucket is module._poet_original_f.__kwdefaults__["bucket"]
    bucket.append(1)
    assert module.f()[2] == [1]  # the mutable default is shared exactly as in the original


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1,), {"c": 3}),
        ((1, 5), {"c": 3}),
        ((1, 5, 6, 7), {"c": 3, "d": 9, "extra": "e"}),
        ((), {"a": 1, "b": 2, "c": 3, "z": 0}),
    ],
)
def test_arguments_are_forwarded_exactly(args: tuple, kwargs: dict, enhance) -> None:
    original_module, module = enhance(SIGNATURES["mixed"], "f")
    assert module.f(*args, **kwargs) == original_module.f(*args, **kwargs)


def test_positional_only_stays_positional_only(enhance) -> None:
    original_module, module = enhance(SIGNATURES["positional_only"], "f")
    assert module.f(1, "y", 2.0, d=True) == original_module.f(1, "y", 2.0, d=True) == (1, "y", 2.0, True)
    for fn in (original_module.f, module.f):
        with pytest.raises(TypeError):
            fn(a=1)
        with pytest.raises(TypeError):
            fn(1, "y", 2.0, True)  # d is keyword-only


def test_async_stays_async(enhance) -> None:
    _, module = enhance(SIGNATURES["async"], "f")
    coroutine = module.f(21)
    assert inspect.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 42


def test_decorated_function_keeps_its_decorator_behaviour(enhance) -> None:
    source = (
        "import functools\n\n"
        "@functools.lru_cache(maxsize=None)\n"
        "def binomial(n: int, k: int) -> int:\n"
        "    if k in (0, n):\n        return 1\n"
        "    return binomial(n - 1, k - 1) + binomial(n - 1, k)\n"
    )
    original_module, module = enhance(source, "binomial")
    # The decorator is applied again, around the enhanced function: the same kind of object.
    assert type(module.binomial) is type(original_module.binomial)
    assert str(inspect.signature(module.binomial)) == "(n: int, k: int) -> int"
    assert module.binomial(30, 15) == original_module.binomial(30, 15) == 155117520
    assert module.binomial.cache_info().hits > 0  # the recursion hits the cache, as in the original
    assert module.binomial.__wrapped__.poet_metrics["calls"] == module.binomial.cache_info().misses
