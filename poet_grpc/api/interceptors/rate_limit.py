"""Per-client rate limit: a token bucket per caller.

Each client may send ``rate_limit_per_second`` requests per second on average
and ``rate_limit_burst`` at once. A request over the limit fails with
RESOURCE_EXHAUSTED (HTTP 429 through the gateway) carrying ErrorInfo
``RATE_LIMITED`` and RetryInfo (plus a ``retry-after`` header) saying when a
token is back. Probes, grpc.health.v1 and reflection are never limited.

The client is, in order: the ``x-client-id`` metadata (header) when present;
else the last ``x-forwarded-for`` entry, which the REST gateway sets to the
address of the HTTP client; else the gRPC peer's address (without its port).
With an auth file the key is the authenticated principal instead (set by the
auth interceptor, which runs first); the self-declared keys above count only
for anonymous use without one.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Callable

import grpc

from poet_grpc.config import Settings
from poet_grpc.core.errors import RateLimited
from poet_grpc.core.principal import current
from poet_grpc.api.interceptors._wrap import check_first

__all__ = ["RateLimitInterceptor", "TokenBuckets", "client_key"]

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/poet.v1.ProbeService/", "/grpc.reflection.")
"""Methods probes and tools call; limiting them would make a busy server look dead."""

MAX_CLIENT_ID = 128
MAX_CLIENTS = 10_000
"""Buckets kept; the least recently used is dropped beyond this (it comes back full)."""


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens per second, at most ``burst`` stored."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for key: 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(metadata, peer: str) -> str:
    """Who is calling: x-client-id, else the last x-forwarded-for hop, else the peer's address."""
    forwarded = ""
    for item in metadata or ():
        key, value = item[0].lower(), item[1]
        if isinstance(value, bytes):
            continue
        if key == "x-client-id" and value.strip():
            return "id:" + value.strip()[:MAX_CLIENT_ID]
        if key == "x-forwarded-for" and value.strip():
            forwarded = value.rsplit(",", 1)[-1].strip()
    if forwarded:
        return "ip:" + forwarded[:MAX_CLIENT_ID]
    # "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path": drop the port.
    host = peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer
    return "peer:" + host


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls over the caller's rate; a no-op when rate_limit_per_second is 0."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic):
        self._buckets = (
            TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst, clock=clock)
            if settings.rate_limit_per_second > 0
            else None
        )

    def _check(self, context: grpc.aio.ServicerContext) -> None:
        assert self._buckets is not None
        principal = current()
        key = principal.key if principal is not None else client_key(context.invocation_metadata(), context.peer())
        wait = self._buckets.take(key)
        if wait > 0:
            rate, burst = self._buckets.rate, self._buckets.burst
            raise RateLimited(
                f"rate limit exceeded: {rate:g} requests per second, bursts of {burst}, per client;"
                f" retry in {wait:.2f}s",
                retry_after=wait,
                metadata={"limit_per_second": f"{rate:g}", "burst": str(burst),
                          "retry_after_ms": str(math.ceil(wait * 1000))},
            )

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if self._buckets is None or handler_call_details.method.startswith(EXEMPT_PREFIXES):
            return handler

        return check_first(handler, lambda request, context: self._check(context))
