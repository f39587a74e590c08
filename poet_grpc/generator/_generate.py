"""generate(): analysis, parameters, rendering, the Dana annotation and the gate;
prepare(), its CPU-bound first half."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import _render
from poet_grpc.generator._analysis import MAX_PARAMETERS, analyze_module, first_function_name, normalize_newlines
from poet_grpc.generator._dana import annotate_dana
from poet_grpc.generator._errors import AnalysisError, GateError
from poet_grpc.generator._gate import SandboxChecks, StartedChecks, prepare_checks, start_sandbox_checks
from poet_grpc.generator._params import resolve_domain, resolve_optimize_for, resolve_params

if TYPE_CHECKING:
    from poet_grpc.generator._gate import GateSandbox
    from poet_grpc.generator._llm import GeminiGenerator
    from poet_grpc.generator._processes import GeneratorProcesses
    from poet_grpc.observability.metrics import Metrics

GENERATOR = "template"


@dataclass(frozen=True)
class Limits:
    """How much one request may make the generator produce (the service's
    POET_MAX_PARAMETERS and POET_MAX_GENERATED_BYTES)."""

    max_parameters: int = MAX_PARAMETERS
    """Most parameters of the enhanced function: its checks grow with each one."""
    max_generated_bytes: int = 1024 * 1024
    """Largest enhanced module (the original and the POET section), in bytes of UTF-8."""


DEFAULT_LIMITS = Limits()

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


@dataclass(frozen=True)
class Prepared:
    """generate()'s first half, done: the template version and the gate's checks
    left for the sandbox. Plain data: it may come from another process."""

    code: GeneratedCode
    checks: SandboxChecks


def generate(
    spec: EnhancementSpec,
    *,
    version: str = "",
    evidence: Mapping[str, Any] | None = None,
    llm: GeminiGenerator | None = None,
    sandbox: GateSandbox | None = None,
    limits: Limits = DEFAULT_LIMITS,
    processes: GeneratorProcesses | None = None,
    metrics: Metrics | None = None,
) -> GeneratedCode:
    """The enhanced version of spec.function_name (the first function when empty).

    Raises AnalysisError for a request that cannot be enhanced (its `field` names the
    culprit: original_code, function_name, domain, optimize_for, config, dana_source),
    also when it goes over `limits` (checked before the gate runs), and GateError when
    the generated code fails the gate (a generator bug). CR and CRLF line ends in the
    code are read as LF (the enhanced module has LF only; Python reads them the same).
    Blocking (the gate waits for the sandbox): call it from a worker thread in async
    code. `sandbox`: where the gate runs the code (default: gate_sandbox());
    `processes`: where the CPU-bound half (prepare()) runs, instead of this thread
    (a server passes them: see _processes).
    `version` (e.g. "v3") is baked into the module as _POET_VERSION and reported in
    its function.execution events; it does not change anything else.
    With `llm`, the template version is the reference and the fallback: the LLM's
    version (written from the analysis, the domain, the template and `evidence`, the
    feedback the template ignores) is returned when it passes the gate, generator
    "gemini"; otherwise the template's, with params["llm_fallback_reason"] saying why.
    `metrics`: where the gate's verdicts and the fallbacks to the template are counted.
    """
    running: list[StartedChecks] = []
    gate_began: list[float] = []

    def start(checks: SandboxChecks) -> None:  # the sandbox works while the last static checks run
        gate_began.append(time.perf_counter())
        running.append(start_sandbox_checks(checks, sandbox=sandbox))

    def gate_seconds() -> float | None:
        """The gate's time, from the start of its sandboxed checks (the static ones
        before them are not timed: they run in a worker process, among the rendering)."""
        return time.perf_counter() - gate_began[0] if gate_began else None

    try:
        try:
            if processes is not None:
                prepared = processes.prepare(spec, version=version, limits=limits, started=start)
            else:
                prepared = prepare(spec, version=version, limits=limits, started=start)
        except BaseException:
            for checks in running:
                checks.cancel()
            raise
        running[0].verdicts()
    except GateError as exc:
        if metrics is not None:
            metrics.gate_checked(GENERATOR, gate_seconds(), rejected=exc.check)
        raise
    if metrics is not None:
        metrics.gate_checked(GENERATOR, gate_seconds())
    template = prepared.code
    if llm is None:
        return template
    spec = replace(spec, original_code=normalize_newlines(spec.original_code))  # the code prepare() read
    outcome = llm.enhance_outcome(spec, template, evidence=evidence, sandbox=sandbox)
    if outcome.code is not None:
        return outcome.code
    if metrics is not None:
        metrics.llm_fallbacks.labels(outcome.status).inc()
    return replace(template, params={**template.params, "llm_fallback_reason": outcome.fallback_reason})


def prepare(
    spec: EnhancementSpec,
    *,
    version: str = "",
    limits: Limits = DEFAULT_LIMITS,
    started: Callable[[SandboxChecks], None] = lambda checks: None,
) -> Prepared:
    """generate()'s CPU-bound first half: the analysis, the limits, rendering and the
    gate's static checks; neither the sandbox nor the LLM. Raises as generate().
    `started` is given the sandbox's checks as soon as they are known, before the
    last static checks, so that the sandbox can work meanwhile."""
    spec = replace(spec, original_code=normalize_newlines(spec.original_code))
    domain = resolve_domain(spec.domain)
    optimize_for = resolve_optimize_for(spec.optimize_for)
    if spec.module and not all(part.isidentifier() for part in spec.module.split(".")):
        raise AnalysisError("context.module", f"{spec.module[:60]!r} is not a dotted module name (e.g. mypkg.text)")
    name = spec.function_name or first_function_name(spec.original_code)
    analysis = analyze_module(spec.original_code, name, max_parameters=limits.max_parameters)
    params = resolve_params(domain, optimize_for, spec.config)
    try:
        rendered = _render.render(
            analysis, params, domain=domain, optimize_for=optimize_for, version=version, module=spec.module
        )
    except RecursionError:  # MAX_NESTING should prevent it; never let it become INTERNAL
        raise AnalysisError("original_code", "the code nests too deeply to enhance") from None
    size = len(rendered.python.encode("utf-8"))
    if size > limits.max_generated_bytes:
        raise AnalysisError(
            "original_code",
            f"the enhanced module of {name}() would be {size} bytes, over the limit of {limits.max_generated_bytes}; "
            "fewer or simpler parameter annotations make it smaller",
        )
    dana = annotate_dana(spec.dana_source, name, domain, params)
    checks, rest = prepare_checks(
        spec.original_code, rendered.python, name, chunks=rendered.chunks, original=analysis, module=spec.module
    )
    started(checks)
    rest()
    template = GeneratedCode(
        python=rendered.python,
        dana=dana,
        optimizations=rendered.optimizations,
        safety_level=safety_level(rendered.optimizations),
        generator=GENERATOR,
        params=params,
    )
    return Prepared(template, checks)
