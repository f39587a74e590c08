"""The Gemini generator: an LLM writes the enhancement, the gate decides.

GeminiGenerator.enhance() builds a prompt (see _prompt) from the analysis, the
domain, the template version and the feedback evidence; asks Gemini through the
google-genai client; pulls the module out of the answer; checks it against the LLM
policy below and then the same gate as the template (check_generated). It returns
the LLM version only when all of that passes; otherwise None, and the outcome says
why, so that the caller keeps the template version.

Calls to Gemini:
- a timeout per request (the client's HttpOptions.timeout, which httpx applies to
  connecting and to each read, so a server trickling bytes could take longer); one
  enhance() waits at most about max_attempts * timeout_seconds plus the delays;
- retries with exponential backoff and full jitter, only for 429, 5xx, timeouts
  and connection errors, never for other 4xx; a Retry-After header or a
  google.rpc.RetryInfo detail sets the delay instead, bounded by
  max_retry_after_seconds. The SDK's own retrying is switched off (attempts=1),
  so this policy is the only one;
- a circuit breaker: failure_threshold consecutive failed calls (each after its
  retries) open it for reset_seconds; then it is half-open and lets one trial call
  through; success closes it, failure opens it again. While it is open no request
  is sent. Answers that arrive but are unusable (malformed, rejected by the gate)
  and 400s (a problem of that one request) are not breaker failures: the service
  is up;
- an LRU cache of prompt -> accepted code: an identical prompt (same model)
  reuses the accepted module without a request. Rejected answers are not cached,
  so a later identical request asks again.

The LLM policy (on top of the gate, which checks syntax, the exact signature and an
isolated import but not what the code does): imports only from the standard library
or from what the original imports; none of eval, exec, compile, __import__,
breakpoint, process, network, ctypes, pickle or importlib modules and os process
calls unless the original itself uses them; the function must be linked to the
original (functools.update_wrapper / wraps, or __wrapped__ set). The template's
event emitter block (_emitter.CANONICAL), copied exactly, is exempt, as in the
gate. A static filter, not a sandbox.

Optimizations and safety level of an LLM version are not taken on trust: the
LLM's code is scanned for structural evidence of each safeguard the template
version has (see _detected_safeguards), and only those with evidence are listed;
safety_level is the usual weighted sum over that list (so never above the
template's). The evidence is syntactic (e.g. an isinstance check plus a raise of
TypeError for input validation), not a proof that the safeguard works. Domain
features (audit_trail, input_length_limit...) have no detector yet, so an LLM
version does not list them even when it keeps their code; they carry no weight in
safety_level, which is unaffected.
"""

from __future__ import annotations

import ast
import email.utils
import hashlib
import logging
import random
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from poet_grpc.core.models import EnhancementSpec, GeneratedCode
from poet_grpc.generator import _render
from poet_grpc.generator._analysis import analyze_module, first_function_name
from poet_grpc.generator._errors import GateError, GeneratorError
from poet_grpc.generator._gate import GateSandbox, check_generated
from poet_grpc.generator._params import resolve_domain
from poet_grpc.generator._prompt import build_prompt, extract_code
from poet_grpc.generator.domains import DOMAINS
from poet_grpc.generator._parsing import parse as parse_ast
from poet_grpc.observability import tracing

if TYPE_CHECKING:
    from poet_grpc.observability.metrics import Metrics

logger = logging.getLogger(__name__)

GENERATOR = "gemini"
DEFAULT_MODEL = "gemini-2.5-flash"

# Outcome statuses.
OK = "ok"
CACHED = "cached"
BREAKER_OPEN = "breaker_open"
TIMEOUT = "timeout"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
CLIENT_ERROR = "client_error"
CONNECTION_ERROR = "connection_error"
EMPTY_RESPONSE = "empty_response"
MALFORMED_OUTPUT = "malformed_output"
POLICY_REJECTED = "policy_rejected"
GATE_REJECTED = "gate_rejected"
ERROR = "error"

_MALFORMED_CHECKS = frozenset({"syntax", "compile"})
_REASON_CHARS = 500


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeout errors, transport errors) of httpx and httpx2: google-genai 3.x sends
    through httpx2 when it is installed, through httpx otherwise."""
    timeouts: list[type[BaseException]] = [TimeoutError]
    transport: list[type[BaseException]] = [ConnectionError]
    for module_name in ("httpx", "httpx2"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


_TIMEOUT_ERRORS, _TRANSPORT_ERRORS = _transport_errors()


@dataclass(frozen=True)
class LLMOutcome:
    """What one enhance() call did."""

    status: str
    """OK or CACHED when `code` is the LLM version; otherwise why there is none."""
    reason: str = ""
    """A human explanation ("" for OK and CACHED)."""
    code: GeneratedCode | None = None
    attempts: int = 0
    """Requests sent to Gemini (0 for a cache hit or an open breaker)."""

    @property
    def ok(self) -> bool:
        return self.code is not None

    @property
    def fallback_reason(self) -> str:
        """"status: reason", for the template version's params (llm_fallback_reason)."""
        return f"{self.status}: {self.reason}" if self.reason else self.status


class _CallFailed(Exception):
    """No usable answer. breaker_failure=False when an answer did arrive (the service
    is up) but cannot be used."""

    def __init__(self, status: str, reason: str, *, breaker_failure: bool = True):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.breaker_failure = breaker_failure
        self.attempts = 0


class _Breaker:
    """Consecutive-failure circuit breaker; closed -> open -> half-open (one trial)."""

    def __init__(self, failure_threshold: int, reset_seconds: float, clock: Any = time.monotonic):
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.reset_seconds:
                return "open"
            return "half_open"

    def acquire(self) -> bool | None:
        """None when the call may not go out; otherwise whether it is the half-open trial."""
        with self._lock:
            if self._opened_at is None:
                return False
            if self._clock() - self._opened_at < self.reset_seconds or self._trial_running:
                return None
            self._trial_running = True
            return True

    def success(self, trial: bool) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            if trial:
                self._trial_running = False

    def failure(self, trial: bool) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
                self._opened_at = self._clock()
                return
            self._failures += 1
            if self._failures >= self.failure_threshold and self._opened_at is None:
                self._opened_at = self._clock()
                logger.warning("Gemini circuit breaker open for %g s after %d failures", self.reset_seconds, self._failures)

    def release(self, trial: bool) -> None:
        """A trial that ended without saying anything about the service's health."""
        if trial:
            with self._lock:
                self._trial_running = False


class GeminiGenerator:
    """Writes enhancements with Gemini; thread-safe (one instance serves every worker thread)."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout_seconds: float = 30.0,
        max_attempts: int = 3,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 30.0,
        max_retry_after_seconds: float = 60.0,
        failure_threshold: int = 5,
        reset_seconds: float = 60.0,
        cache_size: int = 128,
        temperature: float = 0.2,
        max_output_tokens: int | None = None,
        metrics: Metrics | None = None,
    ):
        """api_key: the Gemini API key (required). base_url: another endpoint (tests
        point it at a local fake); None for Google's. timeout_seconds: per request.
        max_attempts: requests per enhance() including the first (>= 1).
        backoff_*: the delay before retry n is random in [0, min(max, base * 2**(n-1))].
        max_retry_after_seconds: bound of a server-requested delay (Retry-After,
        RetryInfo). failure_threshold / reset_seconds: the circuit breaker.
        cache_size: accepted modules kept by prompt (0 disables the cache).
        metrics: where outcomes, requests and the gate's verdicts are counted."""
        if not api_key:
            raise ValueError("api_key is required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        from google import genai
        from google.genai import types

        self.model = model
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.max_retry_after_seconds = max_retry_after_seconds
        self.cache_size = cache_size
        self._config = types.GenerateContentConfig(
            temperature=temperature,
            candidate_count=1,
            **({"max_output_tokens": max_output_tokens} if max_output_tokens else {}),
        )
        http_options = types.HttpOptions(
            base_url=base_url,
            # HttpOptions.timeout is in milliseconds; the client applies it to each request.
            timeout=max(1, round(timeout_seconds * 1000)),
            # One attempt per call to the client: the retry policy is ours, not the SDK's.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        # vertexai=False: the Gemini API, whatever GOOGLE_GENAI_USE_VERTEXAI says.
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=http_options)
        self._breaker = _Breaker(failure_threshold, reset_seconds)
        self._cache: OrderedDict[str, tuple[str, tuple[str, ...]]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._local = threading.local()
        self._sleep = time.sleep
        self._metrics = metrics

    # --- public ------------------------------------------------------------

    @property
    def breaker_state(self) -> str:
        """"closed", "open" or "half_open"."""
        return self._breaker.state

    @property
    def last_outcome(self) -> LLMOutcome | None:
        """The outcome of this thread's latest enhance() call."""
        return getattr(self._local, "outcome", None)

    def enhance(
        self,
        spec: EnhancementSpec,
        template: GeneratedCode,
        *,
        evidence: Mapping[str, Any] | None = None,
    ) -> GeneratedCode | None:
        """The LLM version of spec's function, or None (the template version stays;
        last_outcome says why). Never raises for a failure of the LLM path."""
        return self.enhance_outcome(spec, template, evidence=evidence).code

    def enhance_outcome(
        self,
        spec: EnhancementSpec,
        template: GeneratedCode,
        *,
        evidence: Mapping[str, Any] | None = None,
        sandbox: GateSandbox | None = None,
    ) -> LLMOutcome:
        """enhance(), returning the whole outcome (also kept as last_outcome).
        `sandbox`: where the gate runs the LLM's code (default: gate_sandbox())."""
        with tracing.span("poet.llm", {"gen_ai.system": "gemini", "gen_ai.request.model": self.model}) as span:
            try:
                outcome = self._enhance(spec, template, evidence, sandbox)
            except Exception as exc:  # the LLM path never breaks generation
                logger.exception("Gemini generator failed unexpectedly")
                outcome = LLMOutcome(ERROR, _short(f"{type(exc).__name__}: {exc}"))
            span.set_attribute("poet.llm.outcome", outcome.status)
        self._local.outcome = outcome
        if self._metrics is not None:
            self._metrics.llm_answered(outcome.status, outcome.attempts)
        if not outcome.ok:
            logger.info("Gemini version of %s not used: %s", spec.function_name, outcome.fallback_reason)
        return outcome

    # --- the steps -----------------------------------------------------------

    def _enhance(
        self,
        spec: EnhancementSpec,
        template: GeneratedCode,
        evidence: Mapping[str, Any] | None,
        sandbox: GateSandbox | None,
    ) -> LLMOutcome:
        name = spec.function_name or first_function_name(spec.original_code)
        analysis = analyze_module(spec.original_code, name)
        domain = DOMAINS[resolve_domain(spec.domain)]
        prompt = build_prompt(analysis, spec, template.params, domain, template.python, evidence)
        key = hashlib.sha256(f"{self.model}\0{prompt}".encode()).hexdigest()

        cached = self._cache_get(key)
        if cached is not None:
            python, optimizations = cached
            return LLMOutcome(CACHED, code=self._version(template, python, optimizations))

        trial = self._breaker.acquire()
        if trial is None:
            return LLMOutcome(BREAKER_OPEN, f"circuit breaker open after {self._breaker.failure_threshold} failed calls")
        try:
            text, attempts = self._call(prompt)
        except _CallFailed as failed:
            if failed.breaker_failure:
                self._breaker.failure(trial)
            else:
                self._breaker.success(trial)
            return LLMOutcome(failed.status, failed.reason, attempts=failed.attempts)
        except BaseException:
            self._breaker.release(trial)
            raise
        self._breaker.success(trial)

        python = extract_code(text)
        if not python.strip():
            return LLMOutcome(MALFORMED_OUTPUT, "the answer holds no python code block", attempts=attempts)
        try:
            _check_policy(spec.original_code, python)
        except _PolicyError as exc:
            return LLMOutcome(POLICY_REJECTED, _short(str(exc)), attempts=attempts)
        gate_began = time.perf_counter()
        try:
            check_generated(spec.original_code, python, name, sandbox=sandbox, module=spec.module)
        except GateError as exc:
            self._gate_checked(gate_began, exc.check)
            status = MALFORMED_OUTPUT if exc.check in _MALFORMED_CHECKS else GATE_REJECTED
            return LLMOutcome(status, _short(f"{exc.check}: {exc.description}"), attempts=attempts)
        except GeneratorError as exc:
            self._gate_checked(gate_began, "other")
            return LLMOutcome(GATE_REJECTED, _short(str(exc)), attempts=attempts)
        self._gate_checked(gate_began)
        optimizations = _detected_safeguards(spec.original_code, python, template.optimizations)
        self._cache_put(key, (python, optimizations))
        return LLMOutcome(OK, code=self._version(template, python, optimizations), attempts=attempts)

    def _gate_checked(self, began: float, rejected: str | None = None) -> None:
        if self._metrics is not None:
            self._metrics.gate_checked(GENERATOR, time.perf_counter() - began, rejected)

    def _version(self, template: GeneratedCode, python: str, optimizations: tuple[str, ...]) -> GeneratedCode:
        from poet_grpc.generator._generate import safety_level

        return replace(
            template,
            python=python,
            optimizations=optimizations,
            safety_level=safety_level(optimizations),
            generator=GENERATOR,
            params=dict(template.params),
        )

    def _call(self, prompt: str) -> tuple[str, int]:
        """(answer text, requests sent); _CallFailed when no usable answer came back."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with tracing.span("poet.llm.call", {"gen_ai.system": "gemini", "gen_ai.request.model": self.model,
                                                    "poet.llm.attempt": attempt}):
                    response = self._client.models.generate_content(model=self.model, contents=prompt,
                                                                    config=self._config)
            except Exception as exc:
                failed, retry_after = self._classify(exc)
                failed.attempts = attempt
                if not _retryable(failed) or attempt >= self.max_attempts:
                    if attempt > 1:
                        failed.reason = f"{failed.reason} (after {attempt} attempts)"
                    raise failed from None
                delay = self._delay(attempt, retry_after)
                logger.info("Gemini call failed (%s), retry %d in %.2f s", failed.reason, attempt, delay)
                self._sleep(delay)
                continue
            try:
                return _answer_text(response), attempt
            except _CallFailed as failed:
                failed.attempts = attempt
                raise

    def _classify(self, exc: Exception) -> tuple[_CallFailed, float | None]:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            code = int(exc.code or 0)
            message = _short(f"HTTP {code} {exc.status or ''}: {exc.message or ''}".strip())
            if code == 429:
                return _CallFailed(RATE_LIMITED, message), _retry_after(exc)
            if code >= 500:
                return _CallFailed(SERVER_ERROR, message), _retry_after(exc)
            # 400 is about this request (the next prompt may do); 401/403/404 and the
            # like (key, permission, model) fail every call, so they count for the breaker.
            return _CallFailed(CLIENT_ERROR, message, breaker_failure=code != 400), None
        if isinstance(exc, _TIMEOUT_ERRORS):
            return _CallFailed(TIMEOUT, f"no answer within {self.timeout_seconds:g} s ({type(exc).__name__})"), None
        if isinstance(exc, _TRANSPORT_ERRORS):
            return _CallFailed(CONNECTION_ERROR, _short(f"{type(exc).__name__}: {exc}")), None
        return _CallFailed(ERROR, _short(f"{type(exc).__name__}: {exc}")), None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after_seconds)
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)  # full jitter

    # --- cache ------------------------------------------------------------------

    def _cache_get(self, key: str) -> tuple[str, tuple[str, ...]] | None:
        with self._cache_lock:
            value = self._cache.get(key)
            if value is not None:
                self._cache.move_to_end(key)
            return value

    def _cache_put(self, key: str, value: tuple[str, tuple[str, ...]]) -> None:
        if self.cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _retryable(failed: _CallFailed) -> bool:
    return failed.status in (RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION_ERROR)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _retry_after(exc: Any) -> float | None:
    """Seconds the server asked us to wait: the Retry-After header (seconds or an
    HTTP date), else a google.rpc.RetryInfo retryDelay ("1.5s") in the error details."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value:
        try:
            return float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                return max(0.0, when.timestamp() - time.time())
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else None
    for item in (error or {}).get("details", []) if isinstance(error, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _answer_text(response: Any) -> str:
    """The text of the first candidate (thought parts left out); _CallFailed when
    there is none or the answer was cut or blocked."""
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        feedback = getattr(response, "prompt_feedback", None)
        why = f" (prompt feedback: {feedback})" if feedback else ""
        raise _CallFailed(EMPTY_RESPONSE, _short(f"no candidate in the answer{why}"), breaker_failure=False)
    candidate = candidates[0]
    finish = getattr(candidate, "finish_reason", None)
    finish_name = getattr(finish, "name", None) or (str(finish) if finish else "")
    parts = getattr(getattr(candidate, "content", None), "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    if finish_name and finish_name not in ("STOP", "FINISH_REASON_UNSPECIFIED"):
        raise _CallFailed(
            MALFORMED_OUTPUT if text else EMPTY_RESPONSE,
            f"the answer ended with finish reason {finish_name}",
            breaker_failure=False,
        )
    if not text.strip():
        raise _CallFailed(EMPTY_RESPONSE, "the answer has no text", breaker_failure=False)
    return text


# --- the LLM policy -------------------------------------------------------------

_FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "breakpoint"})
_FORBIDDEN_MODULES = frozenset(
    {
        "subprocess", "socket", "ssl", "http", "urllib", "ftplib", "smtplib", "poplib", "imaplib",
        "telnetlib", "nntplib", "xmlrpc", "socketserver", "asyncore", "asynchat", "ctypes",
        "multiprocessing", "concurrent.futures.process", "pty", "importlib", "runpy", "webbrowser",
        "pickle", "marshal", "shelve", "code", "codeop",
    }
)  # fmt: skip
_FORBIDDEN_OS = re.compile(r"^(system|popen|fork|forkpty|kill|killpg|exec\w*|spawn\w*|posix_spawn\w*)$")
_FORBIDDEN_ASYNCIO = frozenset(
    {"create_subprocess_exec", "create_subprocess_shell", "open_connection", "start_server", "open_unix_connection", "start_unix_server"}
)


class _PolicyError(Exception):
    pass


def _features(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(forbidden constructs used, imported module names) of a module."""
    used: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_CALLS:
            used.add(f"{node.id}()")
        elif isinstance(node, ast.Attribute):
            if node.attr in _FORBIDDEN_CALLS and node.attr != "compile":
                used.add(f"{node.attr}()")
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            if owner.endswith("os") and _FORBIDDEN_OS.match(node.attr):
                used.add(f"os.{node.attr}")
            if owner.endswith("asyncio") and node.attr in _FORBIDDEN_ASYNCIO:
                used.add(f"asyncio.{node.attr}")
    for module in imported:
        for forbidden in _FORBIDDEN_MODULES:
            if module == forbidden or module.startswith(forbidden + "."):
                used.add(f"import {forbidden}")
    return used, imported


def _without_emitter(python: str) -> str:
    """python without the template's event emitter block, when it holds that exact
    block: POET's own code, the one part allowed network access (as in the gate)."""
    try:
        from poet_grpc.generator._emitter import CANONICAL
    except ImportError:  # pragma: no cover - the emitter is part of the template
        return python
    return python.replace(CANONICAL, "") if CANONICAL and CANONICAL in python else python


def _check_policy(original_source: str, python: str) -> None:
    """_PolicyError when the LLM's module breaks the LLM policy (module docstring).
    The template's event emitter block, when copied exactly, is exempt. Code that
    does not parse is left to the gate (it reports where)."""
    try:
        tree = parse_ast(python)
        scanned = parse_ast(_without_emitter(python))
    except (SyntaxError, ValueError, RecursionError):
        return
    original_used, original_imports = _features(parse_ast(original_source))
    used, imports = _features(scanned)
    extra = sorted(used - original_used)
    if extra:
        raise _PolicyError("the code uses " + ", ".join(extra) + ", which the original does not")
    original_roots = {m.partition(".")[0] for m in original_imports}
    foreign = sorted(
        m for m in imports if m.partition(".")[0] not in sys.stdlib_module_names and m.partition(".")[0] not in original_roots
    )
    if foreign:
        raise _PolicyError("the code imports " + ", ".join(foreign) + ": neither standard library nor imported by the original")
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
    }
    if not names & {"update_wrapper", "wraps", "__wrapped__"}:
        raise _PolicyError("the function is not linked to the original (no update_wrapper, wraps or __wrapped__)")


# --- what the LLM's code demonstrably contains -------------------------------------


def _added_nodes(original_source: str, python: str) -> list[ast.AST]:
    """Nodes of the top-level statements of `python` that are not statements of the original."""
    original = {ast.dump(s) for s in parse_ast(original_source).body}
    added: list[ast.AST] = []
    for stmt in parse_ast(python).body:
        if ast.dump(stmt) not in original:
            added.extend(ast.walk(stmt))
    return added


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _detected_safeguards(original_source: str, python: str, template_optimizations: tuple[str, ...]) -> tuple[str, ...]:
    """The template's optimizations for which the code added to the original shows
    structural evidence (in the template's order):

    - input_validation / output_validation: an isinstance() call and TypeError
      (the two are not told apart: both count when this is found);
    - element_type_validation: isinstance inside a loop or comprehension;
    - finite_number_validation: math.isfinite / isnan / isinf;
    - retry: a loop containing a try statement and a sleep call;
    - timeout: a wait_for / asyncio.timeout call, or a join / result / wait /
      acquire call with a timeout keyword or a single timeout-like argument;
    - execution_metrics: `<name>.poet_metrics` is assigned.
    """
    nodes = _added_nodes(original_source, python)
    calls = [n for n in nodes if isinstance(n, ast.Call)]
    names = {_call_name(c) for c in calls}
    raises_type_error = any(isinstance(n, ast.Name) and n.id == "TypeError" for n in nodes)
    checks_types = "isinstance" in names and raises_type_error
    loops = [n for n in nodes if isinstance(n, (ast.For, ast.AsyncFor, ast.While))]

    def in_loop(predicate: Any) -> bool:
        return any(any(predicate(inner) for inner in ast.walk(loop)) for loop in loops)

    comprehension_checks = any(
        isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp))
        and any(isinstance(c, ast.Call) and _call_name(c) == "isinstance" for c in ast.walk(n))
        for n in nodes
    )
    retry = any(
        any(isinstance(i, (ast.Try, getattr(ast, "TryStar", ast.Try))) for i in ast.walk(loop))
        and any(isinstance(i, ast.Call) and _call_name(i) == "sleep" for i in ast.walk(loop))
        for loop in loops
    )
    timeout = bool(names & {"wait_for", "timeout"}) or any(
        _call_name(c) in ("join", "result", "wait", "acquire")
        and (
            any(k.arg == "timeout" for k in c.keywords)
            or (len(c.args) == 1 and re.search(r"timeout|deadline|remaining", ast.unparse(c.args[0]), re.I))
        )
        for c in calls
    )
    metrics = any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "poet_metrics" for t in n.targets)
        for n in nodes
    )
    evidence = {
        _render.INPUT_VALIDATION: checks_types,
        _render.OUTPUT_VALIDATION: checks_types,
        _render.ELEMENT_VALIDATION: checks_types
        and (comprehension_checks or in_loop(lambda i: isinstance(i, ast.Call) and _call_name(i) == "isinstance")),
        _render.FINITE_VALIDATION: bool(names & {"isfinite", "isnan", "isinf"}),
        _render.RETRY: retry,
        _render.TIMEOUT: timeout,
        _render.EXECUTION_METRICS: metrics,
    }
    return tuple(o for o in template_optimizations if evidence.get(o, False))
