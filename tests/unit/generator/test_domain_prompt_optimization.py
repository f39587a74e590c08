"""prompt_optimization: template placeholders must be supplied; prompt length limits."""

from __future__ import annotations

import pytest

from poet_grpc.generator import check_generated
from unit.generator.domain_support import code_of, enhanced

DOMAIN = "prompt_optimization"

RENDER = '''
def render(template: str, **values) -> str:
    return template.format(**values)
'''

BUILD = '''
def build(prompt_template, variables, user="anon"):
    return prompt_template.format(user=user, **(variables or {}))
'''


def test_complete_templates_render_unchanged(load) -> None:
    module = enhanced(load, RENDER, "render", DOMAIN)
    original = load(RENDER)
    for template, values in [
        ("Hi {name}!", {"name": "Ann"}),
        ("{a.real} {b[0]} {c!r:>5} {{literal}}", {"a": 1, "b": [2], "c": "x"}),
        ('Answer as JSON: {{"k": 1}}', {}),
        ("no placeholders", {}),
    ]:
        assert module.render(template, **values) == original.render(template, **values)


def test_missing_placeholders_are_rejected_naming_them(load) -> None:
    module = enhanced(load, RENDER, "render", DOMAIN)
    message = r"argument 'template' uses placeholders that are not supplied: \{name\}, \{day\}"
    with pytest.raises(ValueError, match=message):
        module.render("Hi {name}, {greeting}, {day}", greeting="hello")
    build = enhanced(load, BUILD, "build", DOMAIN)
    assert build.build("{user}: {topic}", {"topic": "tax"}) == "anon: tax"
    with pytest.raises(ValueError, match=r"'prompt_template' .* \{topic\}"):
        build.build("{user}: {topic}", {})


def test_unparsable_templates_and_unknown_mappings_are_left_to_the_function(load) -> None:
    module = enhanced(load, RENDER, "render", DOMAIN)
    with pytest.raises(ValueError, match="Single '}'"):  # str.format's own error
        module.render("oops }")
    build = enhanced(load, BUILD, "build", DOMAIN)
    with pytest.raises(TypeError):  # a list is not a mapping: the function's own error
        build.build("{user}", ["x"])


def test_the_check_can_be_switched_off(load) -> None:
    module = enhanced(load, RENDER, "render", DOMAIN, check_template_placeholders=False)
    with pytest.raises(KeyError):
        module.render("Hi {name}")


def test_long_prompts_and_results_are_rejected(load) -> None:
    module = enhanced(load, RENDER, "render", DOMAIN, max_prompt_chars=10)
    assert module.render("{x}", x="0123456789") == "0123456789"
    with pytest.raises(ValueError, match=r"result is longer than 10 characters"):
        module.render("{x}!", x="0123456789")
    assert module.render.poet_metrics["rejected_outputs"] == 1
    source = "def ask(user_prompt: str) -> int:\n    return len(user_prompt)\n"
    ask = enhanced(load, source, "ask", DOMAIN, max_prompt_chars=3)
    with pytest.raises(ValueError, match="argument 'user_prompt' is longer than 3"):
        ask.ask("abcd")


def test_templates_without_a_known_supplier_are_not_checked() -> None:
    source = "def fill(template: str, name: str) -> str:\n    return template.format(name=name)\n"
    code = code_of(source, "fill", DOMAIN)
    assert "template_placeholder_check" not in code.optimizations and "_poet_check_template(" not in code.python


def test_generated_modules_pass_the_gate() -> None:
    for source, name in [(RENDER, "render"), (BUILD, "build")]:
        check_generated(source, code_of(source, name, DOMAIN).python, name)
