"""Enhancement: turn a function into its next stored version.

Generation runs on worker threads (the generator's safety gate imports the
generated code in a subprocess, never here); storing the version is one store
transaction that appends an `enhancement.completed` event, from which the
store's projector writes the version row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from poet_grpc import generator
from poet_grpc.core.db import Database
from poet_grpc.core.errors import FieldViolation, InvalidArgument, NotFound, PoetError
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.idempotency import seen_request
from poet_grpc.core.models import VERSION_ACTIVE, EnhancementSpec, FunctionVersion, GeneratedCode
from poet_grpc.core.paging import decode_token, encode_token, page_size
from poet_grpc.store import Store

ENHANCEMENT_COMPLETED = "enhancement.completed"
CURRENT = "current"


class GenerationFailed(PoetError):
    """The generated code did not pass the safety gate; nothing was stored."""

    reason = "GENERATED_CODE_REJECTED"


def spec_hash(spec: EnhancementSpec) -> str:
    """Identity of a request's content: equal specs produce equal versions."""
    canonical = json.dumps(dataclasses.asdict(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class EnhancementService:
    def __init__(
        self,
        router: EventRouter,
        *,
        workers: int = 4,
        generate: Callable[[EnhancementSpec], GeneratedCode] = generator.generate,
    ):
        self._router = router
        self._generate = generate
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poet-generator")

    async def enhance(
        self, spec: EnhancementSpec, *, request_id: str = "", code_field: str = "original_code"
    ) -> FunctionVersion:
        """The version for spec: a stored one when this content or request_id was
        seen before, else a newly generated and stored next version."""
        spec = dataclasses.replace(
            spec,
            domain=spec.domain or generator.DEFAULT_DOMAIN,
            optimize_for=spec.optimize_for or generator.OPTIMIZE_FOR[0],
        )
        content_hash = spec_hash(spec)
        known = await self._router.commit(lambda store: self._known_version(store, spec, content_hash, request_id))
        if known is not None:
            return known
        code = await asyncio.get_running_loop().run_in_executor(self._workers, self._generate_checked, spec, code_field)
        return await self._router.commit(lambda store: self._store_version(store, spec, code, content_hash, request_id))

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _check(spec: EnhancementSpec, code_field: str) -> None:
        """InvalidArgument listing every problem of the spec, if any."""
        violations = []
        if spec.domain not in generator.DOMAINS:
            known = ", ".join(sorted(generator.DOMAINS))
            violations.append(FieldViolation("domain", f"unknown domain {spec.domain!r}; known: {known}"))
        if spec.optimize_for not in generator.OPTIMIZE_FOR:
            known = ", ".join(generator.OPTIMIZE_FOR)
            violations.append(FieldViolation("optimize_for", f"unknown goal {spec.optimize_for!r}; known: {known}"))
        try:
            generator.analyze(spec.original_code, spec.function_name)
        except generator.AnalysisError as exc:
            field = code_field if exc.field == "original_code" else exc.field
            violations.append(FieldViolation(field, exc.description))
        if violations:
            raise InvalidArgument(violations)

    def _generate_checked(self, spec: EnhancementSpec, code_field: str) -> GeneratedCode:
        """Runs on a worker thread: validate, then generate."""
        self._check(spec, code_field)
        try:
            return self._generate(spec)
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
        return store.find_version_by_hash(spec.function_name, content_hash)

    def _store_version(
        self, store: Store, spec: EnhancementSpec, code: GeneratedCode, content_hash: str, request_id: str
    ) -> FunctionVersion:
        with store.atomic():
            # A concurrent identical request may have stored it while we generated.
            known = self._known_version(store, spec, content_hash, request_id)
            if known is not None:
                return known
            number = store.next_version_number(spec.function_name)
            label = f"v{number}"
            payload = {
                "function_name": spec.function_name,
                "version": label,
                "number": number,
                "content_hash": content_hash,
                "parent_version": store.current_version(spec.function_name) or "",
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
                # seed 002 "enhancement.completed" fields
                "enhancement_version": label,
                "generated_features": list(code.optimizations),
            }
            if request_id:
                payload |= {"request_id": request_id, "request_fingerprint": content_hash}
            event = self._router.new_event(
                ENHANCEMENT_COMPLETED, payload, source="poet.generator", function_name=spec.function_name
            )
            store.append_events([event])
            return store.get_version(spec.function_name, label)


class VersionCatalog:
    """Read side of versions."""

    def __init__(self, db: Database):
        self._db = db

    async def list_versions(self, function_name: str, *, size: int, token: str) -> tuple[list[FunctionVersion], str, str]:
        """(versions oldest first, current version label, next page token)."""
        after = decode_token(token, [function_name])
        limit = page_size(size, default=50, maximum=500)

        def read(store: Store):
            current = store.current_version(function_name)
            if current is None:
                raise NotFound("function", function_name)
            return current, store.list_versions(function_name, after_number=after, limit=limit + 1)

        current, versions = await self._db.call(read)
        next_token = ""
        if len(versions) > limit:
            versions = versions[:limit]
            next_token = encode_token(versions[-1].number, [function_name])
        return versions, current, next_token

    async def get_version(self, function_name: str, version: str) -> FunctionVersion:
        """One version; "current" names the function's current version."""

        def read(store: Store) -> FunctionVersion | None:
            label = store.current_version(function_name) if version == CURRENT else version
            return store.get_version(function_name, label) if label else None

        found = await self._db.call(read)
        if found is None:
            raise NotFound("version", f"{function_name}/{version}")
        return found
