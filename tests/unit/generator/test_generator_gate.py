"""check_generated(): the gate rejects broken or dishonest code and passes good code."""

from __future__ import annotations

import builtins
import time

import pytest

from poet_grpc.generator import GateError, check_generated

ORIGINAL = "import math\n\n\ndef area(r: float, *, digits: int = 2) -> float:\n    return round(math.pi * r * r, digits)\n"
WRAPPER = "\n\n_orig = area\n\n\ndef area(r: float, *, digits: int = 2) -> float:\n    return _orig(r, digits=digits)\n"
GOOD = ORIGINAL + WRAPPER


def _gate_error(generated: str, original: str = ORIGINAL, **kwargs) -> GateError:
    with pytest.raises(GateError) as caught:
        check_generated(original, generated, "area", **kwargs)
    return caught.value


def test_good_code_passes(gen) -> None:
    check_generated(ORIGINAL, GOOD, "area")
    check_generated(ORIGINAL, gen(ORIGINAL, "area").python, "area")


@pytest.mark.parametrize(
    "header",
    [
        "def area(r: float, *, digits: int = 3) -> float:",  # default
        "def area(r: float, digits: int = 2) -> float:",  # kind
        "def area(r: int, *, digits: int = 2) -> float:",  # annotation
        "def area(r: float, *, digits: int = 2):",  # return annotation
        "async def area(r: float, *, digits: int = 2) -> float:",  # async-ness
        "def area(radius: float, *, digits: int = 2) -> float:",  # name
    ],
)
def test_a_changed_signature_is_rejected(header: str) -> None:
    generated = GOOD.replace("def area(r: float, *, digits: int = 2) -> float:\n    return _orig", header + "\n    return _orig")
    assert generated != GOOD
    error = _gate_error(generated)
    assert error.check == "signature"


def test_a_signature_changed_at_run_time_is_rejected() -> None:
    error = _gate_error(GOOD + "\narea.__signature__ = None\narea.__defaults__ = ()\narea.__kwdefaults__ = {'digits': 9}\n")
    assert error.check == "signature" and "digits: int = 9" in error.description


def test_code_that_does_not_parse_or_compile_is_rejected() -> None:
    error = _gate_error(GOOD + "\ndef broken(:\n    pass\n")
    assert error.check == "syntax" and "line" in error.description
    error = _gate_error(GOOD + "\nreturn 1\n")
    assert error.check == "compile"


def test_a_missing_function_is_rejected() -> None:
    assert _gate_error("x = 1\n").check == "function"


def test_a_module_that_raises_at_import_is_rejected() -> None:
    error = _gate_error(GOOD + "\nraise RuntimeError('boom at import')\n")
    assert error.check == "import"
    assert "RuntimeError: boom at import" in error.description and "line" in error.description
    error = _gate_error(GOOD + "\nimport sys\nsys.exit(3)\n")
    assert error.check == "import" and "SystemExit" in error.description


def test_a_module_that_never_finishes_importing_is_stopped() -> None:
    started = time.perf_counter()
    error = _gate_error(GOOD + "\nwhile True:\n    pass\n", timeout_seconds=1.0)
    assert error.check == "import_timeout"
    assert time.perf_counter() - started < 5


def test_memory_is_limited() -> None:
    error = _gate_error(GOOD + "\nHOARD = bytearray(3 * 1024 ** 3)\n")
    assert error.check == "import" and "MemoryError" in error.description


def test_generated_code_never_runs_in_this_process() -> None:
    check_generated(ORIGINAL, GOOD + "\nimport builtins\nbuiltins.POET_GATE_RAN_HERE = True\n", "area")
    assert not hasattr(builtins, "POET_GATE_RAN_HERE")


def test_the_sandbox_does_not_see_this_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("POET_TEST_SECRET", "hunter2")
    check_generated(ORIGINAL, GOOD + "\nimport os\nassert 'POET_TEST_SECRET' not in os.environ\n", "area")


def test_third_party_imports_missing_here_are_stubbed(gen) -> None:
    original = "import not_installed_anywhere as nia\nfrom also_missing.sub import thing\n\n\ndef area(r):\n    return nia.pi * r\n"
    code = gen(original, "area")
    check_generated(original, code.python, "area")
    error = _gate_error(code.python + "\nimport another_missing_module\n", original=original)
    assert error.check == "import" and "another_missing_module" in error.description


def test_a_version_that_drops_the_decorators_is_refused() -> None:
    original = (
        "def loud(fn):\n    def wrapper(*a, **k):\n        return fn(*a, **k)\n    return wrapper\n\n\n"
        "@loud\ndef area(r: float) -> float:\n    return r\n"
    )
    # What the module binds changes: the decorator's wrapper (*a, **k) becomes a plain function.
    generated = original + "\n\n_orig = area\n\n\ndef area(r: float) -> float:\n    return _orig(r)\n"
    with pytest.raises(GateError) as caught:
        check_generated(original, generated, "area")
    assert caught.value.check == "signature"
