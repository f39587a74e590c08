"""The Dana side: the Dana source annotated with the @poet decorator of the version."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from poet_grpc.generator._errors import AnalysisError


def poet_decorator(domain: str, params: Mapping[str, Any]) -> str:
    """`@poet(domain="...", retries=N, timeout=S)` for the resolved parameters."""
    return f'@poet(domain="{domain}", retries={int(params["max_retries"])}, timeout={float(params["timeout_seconds"])!r})'


def annotate_dana(dana_source: str, function_name: str, domain: str, params: Mapping[str, Any]) -> str:
    """dana_source with the @poet decorator line right above the decorators of
    `def function_name(`; an existing @poet decorator there is replaced. "" stays "".

    AnalysisError(field="dana_source") when the Dana source defines no such function.
    """
    if not dana_source.strip():
        return ""
    lines = dana_source.splitlines(keepends=True)
    pattern = re.compile(rf"^([ \t]*)def[ \t]+{re.escape(function_name)}[ \t]*\(")
    for index, line in enumerate(lines):
        match = pattern.match(line)
        if match:
            break
    else:
        raise AnalysisError("dana_source", f"the Dana source defines no function {function_name!r} (`def {function_name}(`)")
    indent = match.group(1)
    newline = line[len(line.rstrip("\r\n")) :] or "\n"
    top = index
    while top > 0 and lines[top - 1].strip().startswith("@"):
        top -= 1
    decorators = [d for d in lines[top:index] if not re.match(r"\s*@poet\b", d)]
    annotated = [indent + poet_decorator(domain, params) + newline, *decorators]
    return "".join(lines[:top] + annotated + lines[index:])
