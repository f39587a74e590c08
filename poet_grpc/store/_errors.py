"""Errors raised by the store (a module of its own so every part can import it)."""

from __future__ import annotations


class StoreError(Exception):
    """Root error of the store: a rejected event, a bad schema, a failed SQLite call."""
