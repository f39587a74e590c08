"""One lock for every Python-AST parse in the generator.

CPython 3.11 keeps the AST conversion's recursion counter in shared interpreter
state, so threads parsing at once can fail with a spurious SystemError ("AST
constructor recursion depth mismatch", CPython gh-106905). The server generates
on worker threads, so every ast.parse here (and bandit, which parses inside)
holds AST_LOCK. Parsing is GIL-bound CPU work anyway: the lock costs no parallelism.
"""

from __future__ import annotations

import ast
import threading

AST_LOCK = threading.RLock()


def parse(source: str, *args, **kwargs) -> ast.AST:
    """ast.parse under AST_LOCK."""
    with AST_LOCK:
        return ast.parse(source, *args, **kwargs)
