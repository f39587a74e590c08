"""Errors raised by the store (a module of its own so every part can import it)."""

from __future__ import annotations


class StoreError(Exception):
    """Root error of the store: a rejected event, a bad schema, a failed SQLite call."""


class StoreUnavailable(StoreError):
    """The database cannot serve the call now (unreachable, restarting, a lock not
    granted in time): nothing of the call is known to be stored, and the same call,
    retried after retry_after seconds, may succeed. A write whose commit was cut off
    may have been stored: its request_id or event ids make the retry safe."""

    def __init__(self, message: str, *, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after
