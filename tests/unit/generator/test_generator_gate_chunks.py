"""The gate's shortcut for template output: given the chunks the template rendered,
it parses only the chunks that are not POET's fixed blocks, and the sandbox
compiles those blocks once per worker. The verdict must be the one the whole
text gets, and chunks that do not describe the text must not fool it."""

from __future__ import annotations

import pytest

from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import GateError, check_generated, generate
from poet_grpc.generator._analysis import analyze_module
from poet_grpc.generator._gate import _Layout
from poet_grpc.generator._params import resolve_params
from poet_grpc.generator._render import render

ORIGINAL = "def area(r: float, digits: int = 2) -> float:\n    return round(3.14159 * r * r, digits)\n"


def _rendered(original: str = ORIGINAL, name: str = "area"):
    params = resolve_params("base_reliability", "reliability", {})
    return render(analyze_module(original, name), params, domain="base_reliability", optimize_for="reliability")


def _error(generated: str, chunks, original: str = ORIGINAL) -> GateError:
    with pytest.raises(GateError) as caught:
        check_generated(original, generated, "area", chunks=chunks)
    return caught.value


def test_the_template_output_passes_with_and_without_its_chunks() -> None:
    rendered = _rendered()
    assert "".join(rendered.chunks) == rendered.python
    check_generated(ORIGINAL, rendered.python, "area", chunks=rendered.chunks)
    check_generated(ORIGINAL, rendered.python, "area")


def test_fixed_chunks_are_left_out_and_the_rest_keeps_its_line_numbers() -> None:
    rendered = _rendered()
    layout = _Layout.of(rendered.python, rendered.chunks)
    whole = _Layout.of(rendered.python, None)
    assert layout.chunked and layout.emitter and not whole.chunked
    assert len(layout.tree.body) < len(whole.tree.body)
    lines = rendered.python.split("\n")
    for statement in layout.tree.body:  # each statement where the whole text has it
        assert lines[statement.lineno - 1].lstrip().startswith(("def", "import", "_", "\"", "area", "#", "@"))
    whole_lines = {(s.lineno, type(s).__name__) for s in whole.tree.body}
    assert {(s.lineno, type(s).__name__) for s in layout.tree.body} <= whole_lines


def test_a_capability_in_a_variable_chunk_is_found_at_its_line() -> None:
    rendered = _rendered()
    chunks = list(rendered.chunks)
    chunks[-1] = chunks[-1] + "import subprocess\nsubprocess.run(['true'])\n"
    generated = "".join(chunks)
    error = _error(generated, chunks)
    line = generated.split("\n").index("import subprocess") + 1
    assert error.check == "capability" and f"subprocess (line {line})" in error.description


def test_chunks_that_do_not_make_up_the_text_are_ignored() -> None:
    rendered = _rendered()
    hidden = rendered.python + "\nimport socket\nsocket.socket()\n"
    error = _error(hidden, rendered.chunks)  # the chunks lack the last lines: the whole text is read
    assert error.check == "capability" and "socket" in error.description


def test_a_chunk_without_a_final_newline_is_no_chunk() -> None:
    rendered = _rendered()
    chunks = list(rendered.chunks)
    chunks[1] = chunks[1].rstrip("\n")
    chunks[2] = "\n" + chunks[2]
    assert not _Layout.of("".join(chunks), chunks).chunked


def test_a_future_import_after_the_first_chunk_fails_to_compile_as_in_the_whole_module() -> None:
    rendered = _rendered()
    chunks = list(rendered.chunks)
    chunks[-1] = "from __future__ import annotations\n" + chunks[-1]
    error = _error("".join(chunks), chunks)
    assert error.check == "compile" and "__future__" in error.description


def test_an_originals_future_import_holds_for_every_chunk() -> None:
    # The original's def (after the POET section's chunk) has the annotation `Undefined`:
    # it imports (the gate passes) only if that chunk is compiled under the original's
    # `annotations` future too.
    original = "from __future__ import annotations\n\n\ndef area(r: Undefined) -> float:\n    return r\n"
    code = generate(EnhancementSpec(function_name="area", original_code=original))
    assert "@_poet_enhance_area\ndef area(r: Undefined) -> float:" in code.python


def test_new_bidirectional_control_characters_are_refused() -> None:
    rendered = _rendered()
    chunks = list(rendered.chunks)
    chunks[-1] = chunks[-1] + "NOTE = 'admin\u202e'\n"
    error = _error("".join(chunks), chunks)
    assert error.check == "bandit" and "B613" in error.description and "U+202E" in error.description
    original = ORIGINAL + "LABEL = 'x\u202e'\n"
    check_generated(original, _rendered(original).python, "area")  # the original's own are allowed
