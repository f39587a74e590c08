"""Versions: reading them, what changed against the parent, rollback and deprecation."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from poet_grpc.core.db import Database
from poet_grpc.core.errors import InvalidArgument, NotFound, PoetError
from poet_grpc.core.event_router import EventRouter
from poet_grpc.core.models import VERSION_DEPRECATED, FunctionVersion
from poet_grpc.core.paging import page_size
from poet_grpc.store import Store

CURRENT = "current"
VERSION_ACTIVATED = "version.activated"
VERSION_DEPRECATED_EVENT = "version.deprecated"


class CurrentVersionProtected(PoetError):
    """The current version cannot be deprecated; another must be activated first."""

    reason = "VERSION_IS_CURRENT"


@dataclass(frozen=True)
class Change:
    """One difference from the parent version (seed 002 function.update changes)."""

    type: str
    """code, params or metadata."""
    description: str


def describe_changes(parent: FunctionVersion | None, child: FunctionVersion) -> list[Change]:
    """What differs between two versions, parameters first, in stable order."""
    if parent is None:
        return []
    changes = []
    before, after = parent.code.params, child.code.params
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            changes.append(Change("params", f"{key}: {before.get(key)!r} -> {after.get(key)!r}"))
    for label, old, new in (
        ("domain", parent.spec.domain, child.spec.domain),
        ("optimize_for", parent.spec.optimize_for, child.spec.optimize_for),
        ("generator", parent.code.generator, child.code.generator),
    ):
        if old != new:
            changes.append(Change("metadata", f"{label}: {old} -> {new}"))
    if parent.spec.original_code != child.spec.original_code:
        changes.append(Change("code", "original function changed"))
    if parent.code.python != child.code.python:
        changed = sum(1 for line in code_diff(parent, child).splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        changes.append(Change("code", f"enhanced module regenerated ({changed} lines changed)"))
    return changes


def code_diff(parent: FunctionVersion | None, child: FunctionVersion) -> str:
    if parent is None:
        return ""
    return "".join(
        difflib.unified_diff(
            parent.code.python.splitlines(keepends=True),
            child.code.python.splitlines(keepends=True),
            f"{child.function_name} {parent.version}",
            f"{child.function_name} {child.version}",
        )
    )


@dataclass(frozen=True)
class VersionDetail:
    version: FunctionVersion
    changes: list[Change]
    code_diff: str


class VersionCatalog:
    def __init__(self, db: Database, router: EventRouter):
        self._db = db
        self._router = router

    async def list_versions(self, function_name: str, *, size: int, token: str) -> tuple[list[FunctionVersion], str, str]:
        """(versions oldest first, current version label, next page token)."""
        after = self._db.page_tokens.decode(token, [function_name])
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
            next_token = self._db.page_tokens.encode(versions[-1].number, [function_name])
        return versions, current, next_token

    async def get_version(self, function_name: str, version: str) -> FunctionVersion:
        """One version; "current" names the function's current version."""
        found = await self._db.call(lambda store: _resolve(store, function_name, version))
        if found is None:
            raise NotFound("version", f"{function_name}/{version}")
        return found

    async def get_detail(self, function_name: str, version: str) -> VersionDetail:
        """A version with what changed against its parent."""

        def read(store: Store):
            found = _resolve(store, function_name, version)
            if found is None:
                raise NotFound("version", f"{function_name}/{version}")
            parent = store.get_version(function_name, found.parent_version) if found.parent_version else None
            return found, parent

        found, parent = await self._db.call(read)
        return VersionDetail(found, describe_changes(parent, found), code_diff(parent, found))

    async def activate(self, function_name: str, version: str, *, reason: str = "") -> tuple[FunctionVersion, str]:
        """Make the version current again (rollback); returns it and the previous current."""

        def change(store: Store):
            with store.atomic():
                target = _existing(store, function_name, version)
                previous = store.current_version(function_name) or ""
                if previous != version or target.status == VERSION_DEPRECATED:
                    payload = {"function_name": function_name, "version": version, "previous_version": previous, "reason": reason}
                    store.append_events([self._router.new_event(VERSION_ACTIVATED, payload, source="poet.api")])
                return store.get_version(function_name, version), previous

        return await self._router.commit(change)

    async def deprecate(self, function_name: str, version: str, *, reason: str = "") -> FunctionVersion:
        """Retire a version that is not the current one."""

        def change(store: Store):
            with store.atomic():
                target = _existing(store, function_name, version)
                if target.current:
                    raise CurrentVersionProtected(
                        f"{function_name} {version} is the current version; activate another version first",
                        metadata={"function_name": function_name, "version": version},
                    )
                if target.status != VERSION_DEPRECATED:
                    payload = {"function_name": function_name, "version": version, "reason": reason}
                    store.append_events([self._router.new_event(VERSION_DEPRECATED_EVENT, payload, source="poet.api")])
                return store.get_version(function_name, version)

        return await self._router.commit(change)


def _existing(store: Store, function_name: str, version: str) -> FunctionVersion:
    """The version named by its label (not "current"), or NotFound."""
    if version == CURRENT:
        raise InvalidArgument.single("version", 'name a version like "v1", not "current"')
    target = store.get_version(function_name, version)
    if target is None:
        raise NotFound("version", f"{function_name}/{version}")
    return target


def _resolve(store: Store, function_name: str, version: str) -> FunctionVersion | None:
    label = store.current_version(function_name) if version == CURRENT else version
    return store.get_version(function_name, label) if label else None
