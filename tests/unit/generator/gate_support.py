"""A small original and a hand-written "generated" module around it, for the
tests of the gate's security checks."""

from __future__ import annotations

import pytest

from poet_grpc.generator import GateError, check_generated

ORIGINAL = "def area(r: float) -> float:\n    return 3.14159 * r * r\n"
WRAPPER = "\n\n_orig = area\n\n\ndef area(r: float) -> float:\n    {extra}\n    return _orig(r)\n"


def generated(extra: str, original: str = ORIGINAL, top: str = "") -> str:
    """original, then `top` (module-level code), then a wrapper running `extra`."""
    return original + top + WRAPPER.format(extra=extra)


def gate_error(code: str, original: str = ORIGINAL) -> GateError:
    with pytest.raises(GateError) as caught:
        check_generated(original, code, "area")
    return caught.value
