"""Liveness and readiness: the ProbeService behind ``GET /health/live`` and
``GET /health/ready``.

Readiness is the seed's three checks and the sandbox's:

- ``storage``: the event log answers a cheap query (its last position) on the
  store thread within STORAGE_TIMEOUT_SECONDS;
- ``llm_client``: the generator is loaded and, when a Gemini key is configured,
  Gemini's circuit breaker is not open (half-open lets a trial call through, so
  it counts as usable);
- ``memory``: the process's resident set is under ``readiness_max_rss_bytes``
  (0 turns the check off);
- ``sandbox``: the code sandbox is open (its workers are started on demand).

The answer also says which isolation is in force (``isolation``: namespaces, or
the weaker process mode an operator chose) and how callers authenticate
(``authentication``: ``off`` when no auth file is set).

During shutdown readiness is ``not_ready`` whatever the checks say, so a load
balancer stops sending before the listeners close. A not-ready answer carries
the ``x-poet-http-status: 503`` response header, which the gateway turns into
the HTTP status (gRPC clients read ``status``); see gateway/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import grpc

from poet_grpc._gen.poet.v1 import probes_pb2 as pb, probes_pb2_grpc
from poet_grpc.config import Settings
from poet_grpc.core.app import Core

__all__ = ["HTTP_STATUS_HEADER", "ProbeServicer", "resident_memory_bytes"]

log = logging.getLogger(__name__)

HTTP_STATUS_HEADER = "x-poet-http-status"
"""Response metadata the gateway turns into the HTTP status of a successful call."""

STORAGE_TIMEOUT_SECONDS = 0.8
"""Longest the storage check waits; under Kubernetes' default 1 s probe timeout."""


def resident_memory_bytes() -> int | None:
    """The process's current resident set size, or None when it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux: the peak, the best the standard library offers
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


class ProbeServicer(probes_pb2_grpc.ProbeServiceServicer):
    """Answers the probes from the core's state; ``begin_shutdown()`` makes it not ready."""

    def __init__(self, core: Core, settings: Settings, *, authentication: str = "off"):
        self._core = core
        self._settings = settings
        self._authentication = authentication
        self._shutting_down = False
        self._was_ready: bool | None = None

    def begin_shutdown(self) -> None:
        """From now on readiness is not_ready."""
        self._shutting_down = True

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def GetLiveness(self, request: pb.GetLivenessRequest, context: grpc.aio.ServicerContext) -> pb.GetLivenessResponse:
        return pb.GetLivenessResponse(status=pb.alive)

    async def GetReadiness(self, request: pb.GetReadinessRequest, context: grpc.aio.ServicerContext) -> pb.GetReadinessResponse:
        checks = await self.checks()
        ready = all(checks.values()) and not self._shutting_down
        self._log_change(ready, checks)
        if not ready:
            await context.send_initial_metadata(((HTTP_STATUS_HEADER, "503"),))
        return pb.GetReadinessResponse(
            status=pb.ready if ready else pb.not_ready,
            checks=pb.ReadinessChecks(**checks),
            isolation=self._core.sandbox.isolation,
            authentication=self._authentication,
        )

    async def checks(self) -> dict[str, bool]:
        """{"llm_client", "storage", "memory", "sandbox"} -> passed."""
        return {
            "llm_client": self._llm_client_ok(),
            "storage": await self._storage_ok(),
            "memory": self._memory_ok(),
            "sandbox": not self._core.sandbox.closed,
        }

    async def _storage_ok(self) -> bool:
        try:
            await asyncio.wait_for(self._core.db.call(lambda store: store.last_position()), STORAGE_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failure means: not ready
            log.debug("readiness: storage check failed: %r", exc)
            return False
        return True

    def _llm_client_ok(self) -> bool:
        try:
            from poet_grpc import generator

            if not generator.DOMAINS:
                return False
        except Exception as exc:  # noqa: BLE001
            log.debug("readiness: generator unavailable: %r", exc)
            return False
        if not self._settings.gemini_api_key:
            return True
        llm = self._core.enhancements.llm
        return llm is not None and llm.breaker_state != "open"

    def _memory_ok(self) -> bool:
        limit = self._settings.readiness_max_rss_bytes
        if limit <= 0:
            return True
        rss = resident_memory_bytes()
        return rss is None or rss < limit

    def _log_change(self, ready: bool, checks: dict[str, bool]) -> None:
        if ready == self._was_ready:
            return
        self._was_ready = ready
        if ready:
            log.info("readiness: ready")
        else:
            failed = [name for name, ok in checks.items() if not ok] or ["shutting down"]
            log.warning("readiness: not ready (%s)", ", ".join(failed))
