"""generate(): domains, optimize_for, config, determinism, Dana, safety_level, refusals."""

from __future__ import annotations

import asyncio
import inspect
import json

import pytest

from unit.generator.conftest import ENFORCED

from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator import (
    DEFAULT_DOMAIN,
    DOMAINS,
    OPTIMIZE_FOR,
    AnalysisError,
    DomainInfo,
    generate,
    safety_level,
)

SOURCE = '''"""Inventory."""
import math

LIMIT = 100


def restock(levels: list[int], target: float = 10.0, *, urgent: bool = False) -> int:
    """Units to order."""
    missing = sum(max(0, math.ceil(target) - level) for level in levels)
    return min(missing, LIMIT) if not urgent else missing
'''

BASE_PARAMS = {
    "max_retries",
    "backoff_base_seconds",
    "backoff_multiplier",
    "backoff_max_seconds",
    "jitter",
    "timeout_seconds",
    "validate_inputs",
    "validate_outputs",
    "check_element_types",
    "reject_non_finite_floats",
}


def test_domains_are_described_with_their_parameters() -> None:
    expected = {
        "base_reliability",
        "computation",
        "ml_monitoring",
        "llm_optimization",
        "prompt_optimization",
        "financial_services",
        "healthcare",
        "building_management",
        "data_processing",
        "security",
    }
    assert expected <= set(DOMAINS)
    assert DEFAULT_DOMAIN == "base_reliability" and next(iter(DOMAINS)) == DEFAULT_DOMAIN
    for name, info in DOMAINS.items():
        assert isinstance(info, DomainInfo) and info.name == name
        assert len(info.description) > 40
        names = [p.name for p in info.parameters]
        assert len(names) == len(set(names))
        assert BASE_PARAMS <= set(names)
        json.dumps({p.name: p.default for p in info.parameters})  # JSON-compatible defaults
        for p in info.parameters:
            assert p.description
            if p.name not in BASE_PARAMS:  # domain-specific: each one acts now (tests/unit/generator/test_domain_*.py)
                assert "does not act on it yet" not in p.description
    ml = {p.name: p.default for p in DOMAINS["ml_monitoring"].parameters}
    assert ml["drift_threshold"] == 0.1


def test_every_domain_generates_code_with_its_parameters(gen) -> None:
    for name, info in DOMAINS.items():
        code = gen(SOURCE, "restock", domain=name)
        defaults = {p.name: p.default for p in info.parameters}
        assert code.params == {**defaults, **ENFORCED}
        assert f"_POET_DOMAIN = {json.dumps(name)}" in code.python
    assert gen(SOURCE, "restock", domain="financial_services").params["max_retries"] == 0
    assert "retry" not in gen(SOURCE, "restock", domain="financial_services").optimizations


def test_optimize_for_changes_parameters_as_documented(gen) -> None:
    assert OPTIMIZE_FOR == ("reliability", "performance", "safety")
    reliability = gen(SOURCE, "restock").params
    performance = gen(SOURCE, "restock", optimize_for="performance").params
    safety = gen(SOURCE, "restock", optimize_for="safety").params
    assert reliability == {**{p.name: p.default for p in DOMAINS["base_reliability"].parameters}, **ENFORCED}
    assert generate(EnhancementSpec("restock", SOURCE)).params["annotation_checks"] == "observe"
    assert generate(EnhancementSpec("restock", SOURCE, optimize_for="safety")).params["annotation_checks"] == "enforce"
    assert performance["max_retries"] == 1 < reliability["max_retries"]
    assert performance["backoff_base_seconds"] < reliability["backoff_base_seconds"]
    assert performance["backoff_max_seconds"] <= 1.0
    assert safety["check_element_types"] and safety["reject_non_finite_floats"]
    assert not reliability["check_element_types"] and not reliability["reject_non_finite_floats"]


def test_optimize_for_changes_the_generated_code(gen, load) -> None:
    safe = gen(SOURCE, "restock", optimize_for="safety")
    reliable = gen(SOURCE, "restock")
    assert "element_type_validation" in safe.optimizations
    assert "finite_number_validation" in safe.optimizations
    assert "element_type_validation" not in reliable.optimizations
    assert safe.safety_level > reliable.safety_level
    module = load(safe.python)
    with pytest.raises(TypeError, match="'levels'"):
        module.restock([1, "2"])
    with pytest.raises(ValueError, match="finite"):
        module.restock([1], float("nan"))
    assert module.restock([1, 2], 5) == 7
    performance = load(gen(SOURCE, "restock", optimize_for="performance").python)
    assert performance.restock.poet_params["max_retries"] == 1


def test_config_overrides_defaults_and_keeps_unknown_keys(gen, load) -> None:
    code = gen(SOURCE, "restock", domain="computation", config={"retries": 5.0, "timeout": 2, "team": {"owner": "ops"}})
    assert code.params["max_retries"] == 5 and isinstance(code.params["max_retries"], int)
    assert code.params["timeout_seconds"] == 2.0 and isinstance(code.params["timeout_seconds"], float)
    assert code.params["team"] == {"owner": "ops"}
    assert code.params["reject_non_finite_floats"] is True  # the domain's default survives
    module = load(code.python)
    assert module.restock.poet_params == code.params


@pytest.mark.parametrize(
    "config",
    [
        {"max_retries": "three"},
        {"max_retries": -1},
        {"max_retries": 2.5},
        {"max_retries": True},
        {"timeout_seconds": float("nan")},
        {"jitter": 2},
        {"validate_inputs": 1},
        {"retries": 1, "max_retries": 2},
        {"custom": object()},
        {"drift_threshold": "high"},
    ],
)
def test_bad_config_is_an_analysis_error(config: dict) -> None:
    with pytest.raises(AnalysisError) as caught:
        generate(EnhancementSpec("restock", SOURCE, domain="ml_monitoring", config=config))
    assert caught.value.field == "config"


def test_unknown_domain_and_goal() -> None:
    with pytest.raises(AnalysisError) as caught:
        generate(EnhancementSpec("restock", SOURCE, domain="astrology"))
    assert caught.value.field == "domain" and "base_reliability" in caught.value.description
    with pytest.raises(AnalysisError) as caught:
        generate(EnhancementSpec("restock", SOURCE, optimize_for="speed"))
    assert caught.value.field == "optimize_for"


def test_empty_domain_goal_and_name_take_the_defaults(gen) -> None:
    code = gen(SOURCE, "", domain="", optimize_for="")
    assert code == gen(SOURCE, "restock")


def test_output_is_deterministic_and_keeps_the_original_source(gen) -> None:
    first = generate(EnhancementSpec("restock", SOURCE, config={"b": 1, "a": 2}))
    second = generate(EnhancementSpec("restock", SOURCE, config={"a": 2, "b": 1}))
    assert first == second
    assert first.python.encode() == second.python.encode()
    # The original, unchanged but for the section's decorator line right above its def.
    before, _, after = SOURCE.partition("def restock(")
    assert before in first.python and "@_poet_enhance_restock\ndef restock(" + after in first.python
    assert first.generator == "template"
    compile(first.python, "<generated>", "exec")
    assert gen(SOURCE, "restock", domain="security").python != first.python


def test_optimizations_and_safety_level_follow_the_code(gen) -> None:
    plain = "def f(x):\n    return x\n"
    bare = gen(plain, "f", config={"max_retries": 0, "timeout_seconds": 0})
    assert bare.optimizations == ("execution_metrics",)
    assert bare.safety_level == 0.1
    # A sync function's deadline counts as a timeout only when it is hard (a thread per call).
    assert gen(plain, "f").optimizations == ("retry", "execution_metrics")
    assert gen(plain, "f").safety_level == 0.25
    assert gen(plain, "f", config={"hard_timeout": True}).optimizations == ("retry", "timeout", "execution_metrics")
    assert gen("async def f(x):\n    return x\n", "f").optimizations == ("retry", "timeout", "execution_metrics")
    typed = gen(SOURCE, "restock")
    assert typed.optimizations == ("input_validation", "retry", "output_validation", "execution_metrics")
    assert typed.safety_level == 0.65
    assert gen(SOURCE, "restock", optimize_for="safety").safety_level == 0.85
    assert safety_level(["input_validation", "input_validation"]) == 0.25


def test_generator_functions_get_no_retry_or_timeout(gen, load) -> None:
    code = gen("def count(n: int):\n    yield from range(n)\n", "count")
    assert code.optimizations == ("input_validation", "execution_metrics")
    module = load(code.python)
    assert list(module.count(3)) == [0, 1, 2]
    assert inspect.isgeneratorfunction(module.count)
    lazy = module.count("3")  # a generator: nothing runs before the first item is asked for
    with pytest.raises(TypeError, match="'n'"):
        next(lazy)


def test_async_generators_keep_their_kind_and_asend_athrow_aclose(gen, load) -> None:
    source = (
        "LOG = []\n\n\nasync def ticks(n: int):\n    try:\n        for i in range(n):\n"
        "            try:\n                got = yield i\n            except KeyError:\n                got = 'thrown'\n"
        "            LOG.append(got)\n    finally:\n        LOG.append('closed')\n"
    )
    module = load(gen(source, "ticks").python)
    assert inspect.isasyncgenfunction(module.ticks)

    async def drive():
        ticks = module.ticks(5)
        assert await ticks.__anext__() == 0
        assert await ticks.asend("a") == 1
        assert await ticks.athrow(KeyError()) == 2
        await ticks.aclose()
        return [i async for i in module.ticks(3)]

    assert asyncio.run(drive()) == [0, 1, 2]
    assert module.LOG == ["a", "thrown", "closed", None, None, None, "closed"]


def test_a_module_rebinding_a_builtin_the_runtime_uses_does_not_change_the_runtime(gen, load) -> None:
    source = (
        "import builtins\n\nCALLS = []\n\n\nclass ConnectionError(Exception):\n    pass\n\n\n"
        "def len(x):\n    return -1\n\n\ndef f(kind):\n    CALLS.append(kind)\n"
        "    raise (builtins.ConnectionError if kind == 'real' else ConnectionError)('down')\n"
    )
    module = load(gen(source, "f", config={"backoff_base_seconds": 0.0, "max_retries": 2}).python)
    with pytest.raises(ConnectionError):
        module.f("real")  # the builtin ConnectionError is transient: retried twice
    with pytest.raises(module.ConnectionError):
        module.f("mine")  # the module's own class of that name is not: not retried
    assert module.CALLS == ["real"] * 3 + ["mine"]


def test_a_function_named_like_a_builtin_is_fine(gen, load) -> None:
    module = load(gen("def sum(values: list[int], start: int = 0) -> int:\n    return start + len(values)\n", "sum").python)
    assert module.sum([1, 2, 3]) == 3


# --- Dana ------------------------------------------------------------------------------

DANA = """# Restocking rules
@audited
def restock(levels: list, target: float = 10.0) -> int:
    return sum(target - level for level in levels)

def other():
    pass
"""


def test_dana_source_gets_the_poet_decorator(gen) -> None:
    code = gen(SOURCE, "restock", dana_source=DANA, config={"retries": 2, "timeout": 5})
    lines = code.dana.splitlines()
    assert lines[1] == '@poet(domain="base_reliability", retries=2, timeout=5.0)'
    assert lines[2] == "@audited" and lines[3].startswith("def restock(")
    assert code.dana.replace(lines[1] + "\n", "") == DANA


def test_dana_keeps_indentation_and_replaces_an_existing_poet_decorator(gen) -> None:
    dana = '  @poet(domain="old")\n  def restock(levels):\n    return 1\n'
    code = gen(SOURCE, "restock", domain="healthcare", dana_source=dana)
    assert code.dana == '  @poet(domain="healthcare", retries=2, timeout=30.0)\n  def restock(levels):\n    return 1\n'


def test_dana_is_empty_without_dana_source_and_an_error_without_the_function(gen) -> None:
    assert gen(SOURCE, "restock").dana == ""
    with pytest.raises(AnalysisError) as caught:
        generate(EnhancementSpec("restock", SOURCE, dana_source="def other():\n    pass\n"))
    assert caught.value.field == "dana_source"
