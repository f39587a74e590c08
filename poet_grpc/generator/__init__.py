"""POET's code generator: a plain function in, its enhanced version out.

The enhanced version keeps the original's behaviour for valid inputs and adds the
four POET stages: Perceive (argument checks from annotations), Operate (retries with
backoff and jitter on transient errors, a deadline), Enforce (result checks) and
Train (in-process execution metrics, and a function.execution event per call when an
events endpoint is configured: see _emitter). The template generator always runs; with a
GeminiGenerator (a Gemini API key) an LLM may write the version instead, kept only
when it passes the same gate (see _llm). Generated code is checked by a gate that imports it in the sandbox (poet_grpc.sandbox),
never in this process.
A server runs the CPU-bound half of each generation in worker processes (see
_processes), so that heavy requests do not hold its GIL.
"""

from poet_grpc.generator._analysis import FunctionInfo, ParamInfo, analyze, first_function_name
from poet_grpc.generator._errors import AnalysisError, GateError, GeneratorError
from poet_grpc.generator._gate import GateSandbox, check_generated, gate_sandbox
from poet_grpc.generator._generate import Limits, generate, safety_level
from poet_grpc.generator._llm import GeminiGenerator, LLMOutcome
from poet_grpc.generator._params import OPTIMIZE_FOR
from poet_grpc.generator._processes import GeneratorProcesses, generator_processes
from poet_grpc.generator.domains import DEFAULT_DOMAIN, DOMAINS, DomainInfo, DomainParam

__all__ = [
    "DEFAULT_DOMAIN",
    "DOMAINS",
    "OPTIMIZE_FOR",
    "AnalysisError",
    "DomainInfo",
    "DomainParam",
    "FunctionInfo",
    "GateError",
    "GateSandbox",
    "GeminiGenerator",
    "GeneratorError",
    "GeneratorProcesses",
    "LLMOutcome",
    "Limits",
    "ParamInfo",
    "analyze",
    "check_generated",
    "first_function_name",
    "gate_sandbox",
    "generate",
    "generator_processes",
    "safety_level",
]
