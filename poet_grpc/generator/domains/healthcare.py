"""healthcare: clinical and patient-data functions; identifiers stay out of errors and logs.

Identifier redaction (phi_redaction): when a call fails, the values of identifier-like
arguments are replaced by "[REDACTED]" in the exception before it leaves the enhanced
function (and before Train and any event see it). Identifier values are collected from:
parameters named by the `identifier_params` convention; keys of **kwargs by the same
convention; and, in any mapping argument (a patient dict), the values under keys that
match it. A str value, an int value (not bool) and the str/int items of a list, tuple or
set value count; values shorter than redaction_min_chars are left alone.

How the exception is changed: the same object is re-raised (same type, same identity,
same traceback and chaining); in place, each str in its `args` has every occurrence of
each identifier (as str() and as repr() would show it) replaced, an int arg equal to an
identifier becomes "[REDACTED]", and likewise its __notes__ and an OSError's strerror,
filename and filename2; the same is done along its __cause__ / __context__ chain (up to 10 levels).
Messages a custom __str__ builds from other attributes are not covered. Metrics keep
the exception's type only (last_error), never its message; the audit trail keeps
digests only.
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import NAME_MATCH_SOURCE, literal
from poet_grpc.generator.domains._shared import audit_code, audit_parameters
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

IDENTIFIER_REDACTION = "identifier_redaction"

REDACT = '''
REDACTED = "[REDACTED]"


def _poet_identifier_values(arguments):
    """The identifier values among ((parameter, value), ...), as the strings to redact, longest first."""
    conventions = _POET_PARAMS["identifier_params"]
    shortest = _POET_PARAMS["redaction_min_chars"]
    found = []

    def add(value):
        if isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                if isinstance(item, (str, int)):
                    add(item)
            return
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return
        text = value if isinstance(value, str) else str(value)
        for form in (text, repr(text)[1:-1]):
            if len(form) >= shortest and form not in found:
                found.append(form)

    for parameter, value in arguments:
        if parameter.startswith("**"):
            for key, item in value.items():
                if _poet_name_matches(key, conventions):
                    add(item)
        elif _poet_name_matches(parameter.lstrip("*"), conventions):
            add(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _poet_name_matches(key, conventions):
                    add(item)
    found.sort(key=len, reverse=True)
    return found


def _poet_redact_text(text, values):
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def _poet_redact_value(item, values):
    if isinstance(item, str):
        return _poet_redact_text(item, values)
    if not isinstance(item, bool) and isinstance(item, int) and str(item) in values:
        return REDACTED
    return item


def _poet_redact_error(error, arguments):
    """Redact identifier values from `error` in place (see the healthcare module docs)."""
    if not _POET_PARAMS["phi_redaction"]:
        return
    values = _poet_identifier_values(arguments)
    if not values:
        return
    seen = []
    current = error
    while current is not None and len(seen) < 10 and not any(current is s for s in seen):
        seen.append(current)
        current.args = tuple(_poet_redact_value(a, values) for a in current.args)
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [_poet_redact_value(n, values) for n in notes]
        if isinstance(current, OSError):
            for attribute in ("strerror", "filename", "filename2"):
                name = getattr(current, attribute)
                if isinstance(name, str):
                    setattr(current, attribute, _poet_redact_text(name, values))
        current = current.__cause__ if current.__cause__ is not None else current.__context__
'''

IDENTIFIER_NAMES = [
    "patient_id",
    "patient",
    "mrn",
    "ssn",
    "name",
    "dob",
    "date_of_birth",
    "birth_date",
    "email",
    "phone",
    "address",
    "insurance_id",
    "member_id",
    "medicare_id",
    "zip",
    "zip_code",
    "postcode",
]


def code(target: Target) -> DomainCode:
    own = DomainCode()
    if target.params["phi_redaction"]:
        pairs = "".join(f"({literal(p.label)}, {p.name}), " for p in target.parameters)
        if pairs:
            own = DomainCode(
                runtime=(NAME_MATCH_SOURCE, REDACT),
                on_error=(f"_poet_redact_error(_poet_error, ({pairs}))",),
                features=(IDENTIFIER_REDACTION,),
            )
    return own + audit_code(target)  # redaction first: the audit sees the redacted error


DOMAIN = DomainInfo(
    name="healthcare",
    description=(
        "Clinical and patient-data functions. The base reliability stages with two retries and strict checks "
        "(container elements, NaN or infinite floats rejected). Identifiers stay out of errors and logs: when a "
        "call fails, the values of identifier-like arguments (patient_id, mrn, ssn, name, dob, email, phone, "
        "address... by name, also as **kwargs keys and as keys of mapping arguments) are replaced by "
        "[REDACTED] in the exception, which is re-raised as the same object (same type) with its args redacted "
        "in place; metrics keep the error type only. An audit trail of every call (SHA-256 digests, never raw "
        "values) in <function>.poet_audit and as audit.recorded events."
    ),
    parameters=reliability_parameters(max_retries=2, check_element_types=True, reject_non_finite_floats=True)
    + (
        DomainParam(
            "phi_redaction",
            "Redact identifier values from exceptions raised through the function (see identifier_params).",
            True,
        ),
        DomainParam(
            "identifier_params",
            "Name convention of identifier parameters, **kwargs keys and mapping keys (an entry matches the name "
            "itself, entry_* and *_entry: name matches patient_name).",
            IDENTIFIER_NAMES,
        ),
        DomainParam(
            "redaction_min_chars",
            "Identifier values shorter than this are not redacted (replacing every '7' in a message would "
            "destroy it without protecting anyone).",
            2,
            1,
            1000,
        ),
    )
    + audit_parameters(True),
    code=code,
)
