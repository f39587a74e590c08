"""Hostile but well-formed input: deep nesting, huge lines, wide signatures, CR line
ends. Each is refused with an AnalysisError naming original_code (never a
RecursionError or a multi-megabyte message), or enhanced as Python reads it."""

from __future__ import annotations

import ast
import pickle
import threading
import time

import pytest

from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import AnalysisError, GateError, GeneratorProcesses, Limits, analyze, generate
from poet_grpc.generator._analysis import MAX_NESTING, MAX_PARAMETERS
from poet_grpc.generator._gate import _Layout
from poet_grpc.generator._generate import prepare


def refused(source: str, name: str = "f", **limits) -> AnalysisError:
    with pytest.raises(AnalysisError) as caught:
        generate(EnhancementSpec(function_name=name, original_code=source), limits=Limits(**limits))
    assert caught.value.field == "original_code"
    return caught.value


def wide(count: int, annotation: str = "int") -> str:
    return "def f(" + ", ".join(f"p{i}: {annotation}" for i in range(count)) + ") -> int:\n    return p0\n"


# -- item 1: nesting --------------------------------------------------------------

STRING_ANNOTATIONS = {
    # ast.parse of the string itself raises RecursionError (it was not caught: INTERNAL)
    "unary chain": "-" * 5000 + "int",
    "operator chain": "+".join(["int"] * 5000),
    "brackets": "List[" * 1000 + "int" + "]" * 1000,
}


@pytest.mark.parametrize("annotation", STRING_ANNOTATIONS.values(), ids=STRING_ANNOTATIONS.keys())
def test_a_string_annotation_python_cannot_read_is_left_unchecked(annotation: str, enhance) -> None:
    source = f'def f(x: "{annotation}", y: int) -> int:\n    return y * 2\n'
    _, enhanced = enhance(source, "f")
    assert enhanced.f("anything", 21) == 42  # no check of x: Python never reads the annotation
    with pytest.raises(TypeError):
        enhanced.f(None, "21")  # y is still checked


DEEP_SIGNATURES = {
    "annotation": "def f(x: " + "int | " * 400 + "int):\n    return x\n",
    "default": "def f(x=" + "1 + " * 400 + "1):\n    return x\n",
    "keyword-only default": "def f(*, x=" + "-" * 400 + "1):\n    return x\n",
    "lambda default": "def f(x=" + "lambda: " * 400 + "1):\n    return x\n",
    "return annotation": "def f(x) -> " + "a." * 400 + "b:\n    return x\n",
    "decorator": "@" + "a." * 400 + "b\ndef f(x):\n    return x\n",
    "subscript annotation": "def f(x: a" + "[0]" * 400 + "):\n    return x\n",
}


@pytest.mark.parametrize("source", DEEP_SIGNATURES.values(), ids=DEEP_SIGNATURES.keys())
def test_a_signature_nested_too_deeply_is_refused_not_a_recursion_error(source: str) -> None:
    error = refused(source)
    assert f"nest deeper than {MAX_NESTING} levels" in error.description
    with pytest.raises(AnalysisError):
        analyze(source, "f")


def test_nesting_just_under_the_limit_still_enhances(enhance) -> None:
    source = "def f(x=" + "1 + " * (MAX_NESTING - 10) + "1):\n    return x\n"
    original, enhanced = enhance(source, "f")
    assert enhanced.f() == original.f() == MAX_NESTING - 9


DEEP_BODIES = {
    # copied verbatim, never recursed into: as deep as Python parses
    "elif chain": "def f(x):\n    if x == 0:\n        return 0\n"
    + "".join(f"    elif x == {i}:\n        return {i}\n" for i in range(1, 1000))
    + "    return -1\n",
    "operator chain": "def f(x):\n    return " + "x + " * 1500 + "1\n",
    "module-level chain": "Y = " + "1 + " * 1500 + "1\n\ndef f(x):\n    return x + Y\n",
}


@pytest.mark.parametrize("source", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
def test_deep_code_outside_the_signature_still_enhances(source: str, enhance) -> None:
    original, enhanced = enhance(source, "f")
    assert enhanced.f(7) == original.f(7)


def test_code_nested_beyond_what_python_parses_is_an_analysis_error() -> None:
    error = refused("def f(x):\n    return " + "x + " * 5000 + "1\n")
    assert "cannot be parsed" in error.description


# -- item 2: bounded messages ------------------------------------------------------


def test_a_syntax_error_on_a_huge_line_quotes_a_short_excerpt_at_the_column() -> None:
    line = "y = [" + "1, " * 30_000 + "2 +* 3" + ", 4" * 30_000 + "]"
    error = refused("def f(x):\n    return x\n" + line + "\n")
    assert len(error.description) < 400
    assert "line 3" in error.description and "2 +* 3" in error.description
    assert error.description.count("...") == 2  # cut on both sides


def test_a_syntax_error_on_a_short_line_quotes_it_whole() -> None:
    error = refused("x = 1\ndef f(:\n    pass\n")
    assert error.description.endswith("'def f(:'")


def test_lists_of_names_in_messages_are_bounded() -> None:
    many = "".join(f"def {'g' * 100}{i}():\n    pass\n" for i in range(2000))
    with pytest.raises(AnalysisError) as caught:
        analyze(many, "missing")
    assert caught.value.field == "function_name"
    assert len(caught.value.description) < 2000
    assert "and 1980 more" in caught.value.description
    reserved = "".join(f"_poet_{'x' * 200}{i} = {i}\n" for i in range(500)) + "def f():\n    pass\n"
    with pytest.raises(AnalysisError) as caught:
        analyze(reserved, "f")
    assert len(caught.value.description) < 2000 and "and 480 more" in caught.value.description


# -- item 3: amplification ---------------------------------------------------------


def test_a_function_over_the_parameter_limit_is_refused_before_any_work() -> None:
    source = wide(10_000)
    started = time.perf_counter()
    error = refused(source)
    assert time.perf_counter() - started < 5  # it was about 20 s, and 3.3 MB of code
    assert "10000 parameters" in error.description and str(MAX_PARAMETERS) in error.description


def test_the_parameter_limit_counts_every_kind_and_is_configurable(enhance) -> None:
    assert MAX_PARAMETERS == Limits().max_parameters == 255
    source = "def f(a, /, b, *args, c, **kwargs):\n    return a\n"
    assert "5 parameters" in refused(source, max_parameters=4).description
    generate(EnhancementSpec(function_name="f", original_code=source), limits=Limits(max_parameters=5))
    with pytest.raises(AnalysisError):
        analyze(source, "f", max_parameters=4)
    original, enhanced = enhance(wide(MAX_PARAMETERS), "f")  # the limit itself is allowed
    assert enhanced.f(*range(MAX_PARAMETERS)) == 0


def test_the_limits_are_settings() -> None:
    from poet_grpc.config import Settings, generator_limits

    assert generator_limits(Settings()) == Limits()
    settings = Settings.from_env({"POET_MAX_PARAMETERS": "12", "POET_MAX_GENERATED_BYTES": "65536"})
    assert generator_limits(settings) == Limits(max_parameters=12, max_generated_bytes=65536)
    for name in ("POET_MAX_PARAMETERS", "POET_MAX_GENERATED_BYTES"):
        with pytest.raises(ValueError):
            Settings.from_env({name: "0"})


def test_generated_code_over_the_size_limit_is_refused() -> None:
    source = wide(MAX_PARAMETERS, "dict[str, list[tuple[int, float, str]]]")
    error = refused(source, max_generated_bytes=50_000)
    assert "bytes, over the limit of 50000" in error.description
    code = generate(EnhancementSpec(function_name="f", original_code=source))
    assert 50_000 < len(code.python.encode()) <= Limits().max_generated_bytes == 2**20


def test_the_gate_s_chunk_parses_give_whole_module_line_numbers() -> None:
    # Each chunk is parsed alone and its line numbers shifted (it was parsed behind
    # blank lines, quadratic in the module's length: 9 s of 18 for 10,000 parameters).
    prepared = prepare(EnhancementSpec(function_name="f", original_code=wide(MAX_PARAMETERS)))
    chunks, python = prepared.checks.import_args["chunks"], prepared.code.python
    whole = {(s.lineno, s.end_lineno, type(s)) for s in ast.parse(python).body}
    layout = _Layout.of(python, chunks)
    assert len(layout.tree.body) >= 2  # the POET section is one statement: its checks are inside it
    assert {(s.lineno, s.end_lineno, type(s)) for s in layout.tree.body} <= whole
    broken = chunks[:-1] + ["def oops(:\n"]
    with pytest.raises(GateError) as caught:
        _Layout.of("".join(broken), broken)
    assert caught.value.check == "syntax"
    assert f"line {len(''.join(broken).splitlines())}," in caught.value.description


# -- item 4: line ends -------------------------------------------------------------

MODULE = '"""Prices."""\nimport math\n\n\ndef price(x: float, n: int = 2) -> float:\n    """Round\n    up."""\n    return math.ceil(x * 10 ** n) / 10 ** n\n'


@pytest.mark.parametrize("newline", ["\r", "\r\n"], ids=["CR", "CRLF"])
def test_cr_and_crlf_line_ends_enhance_as_python_reads_them(newline: str, load) -> None:
    source = MODULE.replace("\n", newline)
    code = generate(EnhancementSpec(function_name="price", original_code=source))
    assert "\r" not in code.python
    assert code == generate(EnhancementSpec(function_name="price", original_code=MODULE))
    original, enhanced = load(source), load(code.python)
    assert enhanced.price(1.234) == original.price(1.234) == 1.24
    assert enhanced.price.__doc__ == original.price.__doc__ == "Round\n    up."
    with pytest.raises(TypeError):
        enhanced.price("1.0")


def test_a_lone_cr_inside_a_string_literal_means_a_newline_there_too(load) -> None:
    source = 'def f():\r    return """a\rb"""\r'
    assert load(generate(EnhancementSpec(function_name="f", original_code=source)).python).f() == "a\nb"


# -- the generator's worker processes -----------------------------------------------


def test_errors_survive_pickling() -> None:
    for error in (AnalysisError("original_code", "bad"), GateError("syntax", "worse")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and again.args == error.args
        assert vars(again) == vars(error)


def test_prepare_in_a_worker_process_is_prepare_here_and_a_dead_worker_is_replaced() -> None:
    processes = GeneratorProcesses(workers=1)
    try:
        spec = EnhancementSpec(function_name="f", original_code=wide(3))
        assert processes.prepare(spec, version="v2") == prepare(spec, version="v2")
        with pytest.raises(AnalysisError) as caught:
            processes.prepare(EnhancementSpec(function_name="f", original_code=wide(300)))
        assert "300 parameters" in caught.value.description
        assert processes.first_function_name("x = 1\n\nasync def g():\n    pass\n") == "g"
        (worker,) = processes._idle
        worker.process.kill()
        worker.process.wait()  # an idle worker that died is replaced unnoticed
        assert processes.prepare(spec).code == prepare(spec).code
        (worker,) = processes._idle
        heavy = EnhancementSpec(function_name="f", original_code=wide(MAX_PARAMETERS, "dict[str, list[int]]") * 60)
        threading.Timer(0.2, worker.process.kill).start()  # one that dies during a call fails that call only
        with pytest.raises(GateError) as died:
            processes.prepare(heavy)
        assert died.value.check == "sandbox"
        assert processes.prepare(spec).code == prepare(spec).code
    finally:
        processes.close()
