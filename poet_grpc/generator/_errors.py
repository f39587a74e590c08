"""The generator's exception family: one root, one class per kind of failure."""

from __future__ import annotations


class GeneratorError(Exception):
    """Root of every error the generator raises on purpose."""


class AnalysisError(GeneratorError):
    """The request cannot be enhanced as given (bad code, unknown name, bad parameter).

    `field` names the request field at fault: "original_code", "function_name",
    and also "domain", "optimize_for", "config" or "dana_source".
    `description` is a human message (with line and column for syntax errors).
    """

    def __init__(self, field: str, description: str):
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def __reduce__(self):  # pickled by field: it crosses processes (see _processes)
        return type(self), (self.field, self.description)


class GateError(GeneratorError):
    """Generated code failed the safety gate.

    `check` names the failed check ("original", "syntax", "compile", "function",
    "signature", "import", "import_timeout", "sandbox"); `description` says what
    went wrong.
    """

    def __init__(self, check: str, description: str):
        super().__init__(f"{check}: {description}")
        self.check = check
        self.description = description

    def __reduce__(self):
        return type(self), (self.check, self.description)
