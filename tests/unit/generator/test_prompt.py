"""_prompt: the LLM prompt (deterministic, complete) and code extraction from answers."""

from __future__ import annotations

from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import DOMAINS, analyze, generate
from poet_grpc.generator._analysis import analyze_module
from poet_grpc.generator._prompt import build_prompt, extract_code

SOURCE = '''"""Billing."""
import math


def charge(amount: float, /, currency: str = "EUR", *, retries: int = 0) -> float:
    """Charge an amount; returns the amount charged."""
    return math.floor(amount * 100) / 100
'''

SPEC = EnhancementSpec(function_name="charge", original_code=SOURCE, domain="financial_services", optimize_for="safety")


def _prompt(evidence=None, **kw) -> str:
    template = generate(SPEC)
    return build_prompt(
        kw.get("analysis", analyze_module(SOURCE, "charge")),
        SPEC,
        template.params,
        DOMAINS["financial_services"],
        template.python,
        evidence,
    )


def test_prompt_carries_source_contract_domain_stages_and_template() -> None:
    template = generate(SPEC)
    prompt = _prompt()
    assert SOURCE.rstrip("\n") in prompt
    assert template.python.rstrip("\n") in prompt
    # the contract
    assert 'def charge(amount: float, /, currency: str=\'EUR\', *, retries: int=0) -> float' in prompt
    assert "Charge an amount; returns the amount charged." in prompt
    assert "__wrapped__" in prompt and "update_wrapper" in prompt
    assert "standard library only" in prompt and "math" in prompt
    for forbidden in ("eval", "exec", "subprocess", "network"):
        assert forbidden in prompt
    # the domain, its parameters and the stages
    assert DOMAINS["financial_services"].description in prompt
    for key, value in template.params.items():
        assert f"- {key} = " in prompt
    assert "Optimised for: safety." in prompt
    for stage in ("Perceive:", "Operate:", "Enforce:", "Train:"):
        assert stage in prompt
    # one code block, nothing else
    assert "ONE ```python fenced code block" in prompt
    assert "Feedback evidence" not in prompt


def test_prompt_is_deterministic_and_accepts_function_info() -> None:
    assert _prompt() == _prompt()
    assert _prompt(analysis=analyze(SOURCE, "charge")) == _prompt()


def test_prompt_carries_the_evidence_with_an_instruction_to_address_it() -> None:
    evidence = {
        "suggestions": ["reject negative amounts"],
        "metrics": {"error_rate": 0.4, "success_rate": 0.6},
        "failure_examples": [{"args": [-1.0], "error": "ValueError: negative"}],
        "window": "24h",
    }
    prompt = _prompt(evidence)
    assert "Feedback evidence" in prompt and "Address this evidence" in prompt
    for text in ("reject negative amounts", '"error_rate": 0.4', "ValueError: negative", '"window": "24h"'):
        assert text in prompt
    # known sections first, in a fixed order; same evidence in another order, same prompt
    assert prompt.index("### Metrics") < prompt.index("### Failure examples") < prompt.index("### Suggestions")
    assert prompt == _prompt(dict(reversed(list(evidence.items()))))
    assert _prompt({}) == _prompt()  # empty evidence is no evidence


def test_prompt_cuts_huge_evidence() -> None:
    prompt = _prompt({"failure_examples": ["x" * 100_000]})
    assert "(evidence cut)" in prompt and len(prompt) < 60_000


def test_extract_code_from_a_python_block_with_prose() -> None:
    text = "Sure! Here it is:\n\n```python\ndef f():\n    return 1\n```\n\nThis adds retries.\n"
    assert extract_code(text) == "def f():\n    return 1\n"


def test_extract_code_prefers_python_blocks_and_handles_variants() -> None:
    text = "```text\nnot code\n```\nthen\n```py\nx = 1\n```\n```python\ny = 2\n```"
    assert extract_code(text) == "x = 1\n"
    assert extract_code("```\nz = 3\n```") == "z = 3\n"
    assert extract_code("~~~python\nw = 4\n~~~") == "w = 4\n"
    assert extract_code("```python\r\na = 1\r\n```\r\n") == "a = 1\n"
    # a fence inside the code (a longer outer fence keeps it)
    assert extract_code('````python\ns = """```"""\n````') == 's = """```"""\n'


def test_extract_code_raw_and_degenerate_answers() -> None:
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"  # cut answer
    assert extract_code("") == ""
    assert extract_code("   \n") == ""
    assert extract_code("```json\n{}\n```") == ""
