"""Enhancement: turn a function into its next stored version.

Generation runs on worker threads (the generator's safety gate runs the
generated code in the sandbox, never here; its CPU-bound half runs in the
generator's worker processes, off the event loop's GIL), at most half of them for
any one caller (FairShare); storing the version is one store transaction that appends an
`enhancement.completed` event, from which the store's projector writes the
version row, and charges the caller's quotas (core/quotas.py).

A function's identity is its module plus its name (EnhancementSpec.identity:
"mypkg.text.first", or "first" without a module): versions, quotas, events and
request records are keyed by it. Generations of one identity run one at a time
in this process (concurrent calls queue), so each sees the version before it; a
call that still loses the race for a version number (another process, a queue
too long) is refused with ConcurrentEnhancement (ABORTED, retry shortly).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from poet_grpc import generator
from poet_grpc.core.errors import Aborted, FieldViolation, InvalidArgument, PoetError
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.fair_share import FairShare
from poet_grpc.core.idempotency import seen_request
from poet_grpc.core.keyed_locks import KeyedLocks
from poet_grpc.core.models import VERSION_ACTIVE, EnhancementSpec, EventRecord, FunctionVersion, GeneratedCode
from poet_grpc.core.quotas import Quotas, check as check_quota, code_bytes
from poet_grpc.observability import tracing
from poet_grpc.observability.metrics import UNKNOWN, Metrics
from poet_grpc.store import Store

ENHANCEMENT_COMPLETED = "enhancement.completed"
MAX_NUMBER_RACES = 3
MAX_QUEUED_PER_FUNCTION = 64
"""Calls that may hold or wait for one function's generation lock at once; an
Enhance call beyond them is refused with ConcurrentEnhancement rather than queued."""
RETRY_DELAY_SECONDS = (0.1, 1.0)
"""Range of the (jittered) retry delay a ConcurrentEnhancement suggests."""
LEARNING_CALLER = "poet:learning-loop"
"""The caller the learning loop's regenerations count against."""


class GenerationFailed(PoetError):
    """The generated code did not pass the safety gate; nothing was stored."""

    reason = "GENERATED_CODE_REJECTED"


class ConcurrentEnhancement(Aborted):
    """Another enhancement of the same function took the version number this one was
    generated for, too often; nothing was stored. Transient: retry after retry_after."""

    reason = "CONCURRENT_ENHANCEMENT"

    def __init__(self, identity: str, why: str):
        super().__init__(
            f"{why}; retry", retry_after=round(random.uniform(*RETRY_DELAY_SECONDS), 3),
            metadata={"function_name": identity},
        )


def spec_hash(spec: EnhancementSpec) -> str:
    """Identity of a request's content: equal specs produce equal versions."""
    fields = dataclasses.asdict(spec)
    if not fields["module"]:
        del fields["module"]  # module-less specs keep the hashes they had before modules existed
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Regeneration:
    """Why and from what the learning loop asks for a new version."""

    parent: FunctionVersion
    spec: EnhancementSpec
    reason: str
    evidence: dict[str, Any]
    trigger: EventRecord
    follow_up: Callable[[FunctionVersion], list[EventRecord]]
    """Events logged with the new version (function.update, ...), given it."""


class EnhancementService:
    def __init__(
        self,
        router: EventRouter,
        *,
        workers: int = 4,
        generate: Callable[..., GeneratedCode] = generator.generate,
        llm: "generator.GeminiGenerator | None" = None,
        sandbox: "generator.GateSandbox | None" = None,
        quotas: Quotas | None = None,
        limits: "generator.Limits | None" = None,
        processes: "generator.GeneratorProcesses | None" = None,
        metrics: Metrics | None = None,
    ):
        """workers: generations at once (the sandbox should have as many workers);
        sandbox: where the gate runs the code (default: the generator's shared one);
        quotas: what each caller may store (default: Quotas());
        limits: how much one request may make the generator produce (default: generator.Limits());
        processes: where the CPU-bound half of generation runs, off this process's GIL
        (default: the generator's shared ones, started now);
        metrics: where requests, generations and the gate are counted."""
        self._router = router
        self._metrics = metrics or Metrics()
        self._generate = generate
        self._llm = llm
        self._sandbox = sandbox
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poet-generator")
        self._fair_share = FairShare(workers)
        self._quotas = quotas or Quotas()
        self._limits = limits or generator.Limits()
        self._processes = processes or generator.generator_processes(workers)
        self._processes.warm()
        self._generating = KeyedLocks()
        """One generation at a time per function identity (Enhance and the learning loop)."""

    @property
    def quotas(self) -> Quotas:
        return self._quotas

    @property
    def llm(self) -> "generator.GeminiGenerator | None":
        return self._llm

    async def enhance(
        self, spec: EnhancementSpec, *, request_id: str = "", code_field: str = "original_code", caller: str = ""
    ) -> FunctionVersion:
        """The version for spec: a stored one when this content or request_id was
        seen before, else a newly generated and stored next version. An empty
        function_name means the first function the code defines. `caller` (who
        asks) gets at most half of the generator's workers at a time, and is
        charged for what is stored (QuotaExceeded, storing nothing, past a quota;
        a version already stored is returned regardless). Calls for one function
        identity queue behind each other; ConcurrentEnhancement (store nothing,
        retry) when the queue is full or the version number is lost to another
        process too often."""
        # The seed's metrics; the domain label is bounded by the known domains.
        domain = spec.domain or generator.DEFAULT_DOMAIN
        domain = domain if domain in generator.DOMAINS else UNKNOWN
        self._metrics.active_enhancements.inc()
        began = time.perf_counter()
        ok = False
        try:
            version = await self._enhance(spec, request_id, code_field, caller)
            ok = True
            return version
        finally:
            self._metrics.active_enhancements.dec()
            self._metrics.enhancement_done(domain, ok, time.perf_counter() - began)

    async def _enhance(self, spec: EnhancementSpec, request_id: str, code_field: str, caller: str) -> FunctionVersion:
        spec = dataclasses.replace(
            spec,
            function_name=spec.function_name or await self._first_function(spec.original_code, code_field),
            domain=spec.domain or generator.DEFAULT_DOMAIN,
            optimize_for=spec.optimize_for or generator.OPTIMIZE_FOR[0],
        )
        content_hash = spec_hash(spec)
        identity = spec.identity

        def look_up(store: Store) -> tuple[FunctionVersion | None, int]:
            known = self._known_version(store, spec, content_hash, request_id)
            if known is None:
                self._precheck_quota(store, spec, caller)
            return known, store.next_version_number(identity)

        known, number = await self._router.commit(look_up)
        if known is not None:
            return known  # a stored version: no need to queue for the generator
        waiting = self._generating.users(identity)
        if waiting >= MAX_QUEUED_PER_FUNCTION:
            raise ConcurrentEnhancement(identity, f"{waiting} enhancements of {identity} are already queued")
        async with self._generating.hold(identity):
            for attempt in range(MAX_NUMBER_RACES):
                if attempt or waiting:
                    # After a wait the queue ahead may have stored this very content.
                    known, number = await self._router.commit(look_up)
                    if known is not None:
                        return known
                code = await self._run_generator(spec, f"v{number}", code_field, evidence=None, caller=caller)
                stored = await self._router.commit(
                    lambda store: self._store_version(
                        store, spec, code, content_hash, number, request_id=request_id, caller=caller
                    )
                )
                if stored is not None:
                    return stored
        raise ConcurrentEnhancement(identity, f"concurrent enhancements of {identity} kept taking its next version number")

    async def regenerate(self, job: Regeneration) -> FunctionVersion | None:
        """Store the next version for job.parent, unless parent stopped being the current
        version meanwhile (then None: someone else already acted on it)."""
        # Linked to the span that appended the trigger: the request that caused this,
        # which may have ended long ago (the learning loop reads the log later).
        attributes = {"poet.function": job.parent.function_name, "poet.parent_version": job.parent.version,
                      "poet.reason": job.reason, "poet.trigger.event_id": job.trigger.id,
                      "poet.trigger.trace_id": job.trigger.metadata.get("trace_id", "")}
        with tracing.span("poet.regenerate", attributes, links=tracing.link_to(job.trigger.metadata)):
            async with self._generating.hold(job.parent.function_name):
                return await self._regenerate(job)

    async def _regenerate(self, job: Regeneration) -> FunctionVersion | None:
        name = job.parent.function_name  # the identity; job.spec (from the parent) has its module
        for _ in range(MAX_NUMBER_RACES):
            number = await self._router.commit(lambda store: store.next_version_number(name))
            code = await self._run_generator(
                job.spec, f"v{number}", "original_code", evidence=job.evidence, caller=LEARNING_CALLER
            )

            def store_it(store: Store) -> FunctionVersion | bool | None:
                with store.atomic():
                    if store.current_version(name) != job.parent.version:
                        return None
                    new = self._store_version(
                        store, job.spec, code, spec_hash(job.spec), number, update_reason=job.reason, trigger=job.trigger,
                        caller=LEARNING_CALLER,
                    )
                    if new is None:
                        return False  # the number was taken meanwhile: generate again
                    store.append_events(job.follow_up(new))
                    return new

            stored = await self._router.commit(store_it)
            if stored is not False:
                return stored
        return None

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)

    async def _run_generator(
        self, spec: EnhancementSpec, label: str, code_field: str, evidence, caller: str
    ) -> GeneratedCode:
        async with self._fair_share.slot(caller):
            with tracing.span("poet.generate", {"poet.version": label, "poet.domain": spec.domain}):
                # The worker thread runs in this context: the generator's spans are children of this one.
                context = contextvars.copy_context()
                return await asyncio.get_running_loop().run_in_executor(
                    self._workers, context.run, self._generate_checked, spec, label, code_field, evidence
                )

    async def _first_function(self, code: str, code_field: str) -> str:
        # In a generator process: parsing a large module here would hold the event loop.
        try:
            return await asyncio.to_thread(self._processes.first_function_name, code)
        except generator.AnalysisError as exc:
            raise InvalidArgument.single(code_field, exc.description) from None
        except generator.GateError as exc:
            raise GenerationFailed(exc.description, metadata={"check": exc.check}) from None

    def _check(self, spec: EnhancementSpec, code_field: str) -> None:
        """InvalidArgument listing every problem of the spec, if any. The code is
        analysed here (in a generator process) only when there is another problem to
        list with its own; otherwise generate() finds them without a second analysis."""
        violations = []
        if spec.domain not in generator.DOMAINS:
            known = ", ".join(sorted(generator.DOMAINS))
            violations.append(FieldViolation("domain", f"unknown domain {spec.domain!r}; known: {known}"))
        if spec.optimize_for not in generator.OPTIMIZE_FOR:
            known = ", ".join(generator.OPTIMIZE_FOR)
            violations.append(FieldViolation("optimize_for", f"unknown goal {spec.optimize_for!r}; known: {known}"))
        if not violations:
            return
        try:
            self._processes.analyze(spec.original_code, spec.function_name, max_parameters=self._limits.max_parameters)
        except generator.AnalysisError as exc:
            field = code_field if exc.field == "original_code" else exc.field
            violations.append(FieldViolation(field, exc.description))
        except generator.GateError:
            pass  # no worker to analyse it: the other problems are reason enough
        raise InvalidArgument(violations)

    def _generate_checked(self, spec: EnhancementSpec, label: str, code_field: str, evidence) -> GeneratedCode:
        """Runs on a worker thread: validate, then generate."""
        self._check(spec, code_field)
        try:
            return self._generate(
                spec, version=label, evidence=evidence, llm=self._llm, sandbox=self._sandbox, limits=self._limits,
                processes=self._processes, metrics=self._metrics,
            )
        except generator.AnalysisError as exc:
            field = code_field if exc.field == "original_code" else exc.field
            raise InvalidArgument.single(field, exc.description) from None
        except generator.GateError as exc:
            raise GenerationFailed(
                f"generated code failed the {exc.check} check: {exc.description}", metadata={"check": exc.check}
            ) from None

    @staticmethod
    def _known_version(store: Store, spec: EnhancementSpec, content_hash: str, request_id: str) -> FunctionVersion | None:
        seen = seen_request(store, request_id, ENHANCEMENT_COMPLETED, content_hash)
        if seen is not None:
            return store.get_version(seen.result["function_name"], seen.result["version"])
        return store.find_version_by_hash(spec.identity, content_hash)

    def _store_version(
        self,
        store: Store,
        spec: EnhancementSpec,
        code: GeneratedCode,
        content_hash: str,
        number: int,
        *,
        request_id: str = "",
        update_reason: str = "",
        trigger: EventRecord | None = None,
        caller: str = "",
    ) -> FunctionVersion | None:
        """Append the version as number; None if that number was taken meanwhile
        (the code embeds its version label, so it must be generated again).
        QuotaExceeded, storing nothing, if caller may not store it."""
        identity = spec.identity
        with store.atomic():
            if not trigger:
                # A concurrent identical request may have stored it while we generated.
                known = self._known_version(store, spec, content_hash, request_id)
                if known is not None:
                    return known
            # Before the number check: a caller at its quota is refused, not sent to generate again.
            size = code_bytes(spec.original_code, spec.dana_source, code.python, code.dana)
            creates = check_quota(store, self._quotas, caller, identity, size, service=caller == LEARNING_CALLER)
            if store.next_version_number(identity) != number:
                return None
            label = f"v{number}"
            payload = {
                "function_name": identity,
                "module": spec.module,
                "version": label,
                "number": number,
                "content_hash": content_hash,
                "parent_version": store.current_version(identity) or "",
                "original_code": spec.original_code,
                "domain": spec.domain,
                "optimize_for": spec.optimize_for,
                "context": spec.context,
                "dana_source": spec.dana_source,
                "config": spec.config,
                "python_code": code.python,
                "dana_code": code.dana,
                "optimizations": list(code.optimizations),
                "safety_level": code.safety_level,
                "generator": code.generator,
                "params": code.params,
                "status": VERSION_ACTIVE,
                "update_reason": update_reason,
                # seed 002 "enhancement.completed" fields
                "enhancement_version": label,
                "generated_features": list(code.optimizations),
            }
            if request_id:
                payload |= {"request_id": request_id, "request_fingerprint": content_hash}
            event = self._router.new_event(
                ENHANCEMENT_COMPLETED,
                payload,
                source="poet.generator",
                function_name=identity,
                causation_id=trigger.id if trigger else "",
                correlation_id=trigger.correlation_id if trigger else "",
            )
            store.append_events([event])
            store.charge_quota(caller, identity, created_function=creates, size=size)
            return store.get_version(identity, label)

    def _precheck_quota(self, store: Store, spec: EnhancementSpec, caller: str) -> None:
        """Refuse before generating when the source alone is over the caller's quota
        (the store transaction checks again with the generated code)."""
        check_quota(store, self._quotas, caller, spec.identity, code_bytes(spec.original_code, spec.dana_source))
