"""One HTTP attempt, the retry policy and the circuit breaker of a sink."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ._config import SinkConfig
from .formatters import Request


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retryable: bool = False
    error: str = ""
    retry_after: float | None = None
    body: Any = None
    """The response's JSON body on success (None if not JSON)."""


async def post(client: httpx.AsyncClient, sink: SinkConfig, request: Request) -> Outcome:
    """One attempt: 2xx ok; connection errors, timeouts, 5xx and 429 retryable; other 4xx final."""
    try:
        response = await client.post(
            request.url, json=request.body, headers=dict(sink.headers), timeout=sink.timeout_seconds
        )
    except httpx.HTTPError as exc:
        return Outcome(False, retryable=True, error=f"{type(exc).__name__}: {exc}"[:500])
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            body = None
        return Outcome(True, body=body)
    error = f"HTTP {status}: {response.text[:300]}"
    retryable = status >= 500 or status in (408, 429)
    return Outcome(False, retryable=retryable, error=error, retry_after=retry_after(response.headers.get("Retry-After")))


def retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff(sink: SinkConfig, attempt: int, retry_after_seconds: float | None = None) -> float:
    """Delay before the next attempt: exponential with full jitter, or Retry-After; bounded."""
    if retry_after_seconds is not None:
        return min(retry_after_seconds, sink.backoff_max_seconds)
    ceiling = min(sink.backoff_max_seconds, sink.backoff_initial_seconds * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (reset_seconds) -> half_open:
    one trial; success closes, failure opens again."""

    def __init__(self, threshold: int, reset_seconds: float, clock=time.monotonic):
        self._threshold = threshold
        self._reset = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "open" if self._clock() - self._opened_at < self._reset else "half_open"

    def wait_seconds(self) -> float:
        """How long until a request may be sent (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._reset - (self._clock() - self._opened_at))

    async def ready(self) -> None:
        while (delay := self.wait_seconds()) > 0:
            await asyncio.sleep(delay)

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            # A failed half-open trial, or too many in a row: open (again).
            self._opened_at = self._clock()
            self.opened_count += 1
