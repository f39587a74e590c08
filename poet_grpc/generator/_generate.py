"""generate(): analysis, parameters, rendering, the Dana annotation and the gate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import _render
from poet_grpc.generator._analysis import analyze_module, first_function_name
from poet_grpc.generator._dana import annotate_dana
from poet_grpc.generator._errors import AnalysisError
from poet_grpc.generator._gate import check_generated
from poet_grpc.generator._params import resolve_domain, resolve_optimize_for, resolve_params

if TYPE_CHECKING:
    from poet_grpc.generator._gate import GateSandbox
    from poet_grpc.generator._llm import GeminiGenerator
    
GENERATOR = "template"

SAFETY_WEIGHTS = {
    _render.INPUT_VALIDATION: 0.25,
    _render.OUTPUT_VALIDATION: 0.15,
    _render.RETRY: 0.15,
    _render.TIMEOUT: 0.15,
    _render.EXECUTION_METRICS: 0.10,
    _render.ELEMENT_VALIDATION: 0.10,
    _render.FINITE_VALIDATION: 0.10,
}
"""Weight of each safeguard in safety_level; they sum to 1."""


def safety_level(optimizations: Iterable[str]) -> float:
    """A 0-1 score: the sum of SAFETY_WEIGHTS over the safeguards the generated code
    actually contains (rounded to 2 decimals). Argument checks count 0.25; result
    checks, retries and a deadline 0.15 each; metrics, container-element checks and
    NaN/infinity checks 0.10 each. A safeguard counts only if code for it was emitted:
    input_validation needs at least one checkable parameter annotation,
    output_validation a checkable return annotation, retry max_retries > 0, timeout
    timeout_seconds > 0 (neither applies to generator functions)."""
    return round(sum(SAFETY_WEIGHTS.get(o, 0.0) for o in set(optimizations)), 2)


def generate(
    spec: EnhancementSpec,
    *,
    version: str = "",
    evidence: Mapping[str, Any] | None = None,
    llm: GeminiGenerator | None = None,
    sandbox: GateSandbox | None = None,
) -> GeneratedCode:
    """The enhanced version of spec.function_name (the first function when empty).

    Raises AnalysisError for a request that cannot be enhanced (its `field` names the
    culprit: original_code, function_name, domain, optimize_for, config, dana_source)
    and GateError when the generated code fails the gate (a generator bug).
    Blocking (the gate waits for the sandbox): call it from a worker thread in async
    code. `sandbox`: where the gate runs the code (default: gate_sandbox()).
    `version` (e.g. "v3") is baked into the module as _POET_VERSION and reported in
    its function.execution events; it does not change anything else.
    With `llm`, the template version is the reference and the fallback: the LLM's
    version (written from the analysis, the domain, the template and `evidence`, the
    feedback the template ignores) is returned when it passes the gate, generator
    "gemini"; otherwise the template's, with params["llm_fallback_reason"] saying why.
    """
    domain = resolve_domain(spec.domain)
    optimize_for = resolve_optimize_for(spec.optimize_for)
    name = spec.function_name or first_function_name(spec.original_code)
    analysis = analyze_module(spec.original_code, name)
    if analysis.info.is_async and analysis.info.is_generator:
        raise AnalysisError(
            "original_code",
            f"{name} is an async generator function; the template generator cannot enhance those yet",
        )
    params = resolve_params(domain, optimize_for, spec.config)
    rendered = _render.render(analysis, params, domain=domain, optimize_for=optimize_for, version=version)
    dana = annotate_dana(spec.dana_source, name, domain, params)
    check_generated(
        spec.original_code, rendered.python, name, chunks=rendered.chunks, original=analysis, sandbox=sandbox
    )
    template = GeneratedCode(
        python=rendered.python,
        dana=dana,
        optimizations=rendered.optimizations,
        safety_level=safety_level(rendered.optimizations),
        generator=GENERATOR,
        params=params,
    )
    if llm is None:
        return template
    outcome = llm.enhance_outcome(spec, template, evidence=evidence, sandbox=sandbox)
    if outcome.code is not None:
        return outcome.code
    return replace(template, params={**template.params, "llm_fallback_reason": outcome.fallback_reason})
