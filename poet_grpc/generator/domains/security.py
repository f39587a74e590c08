"""security: security-sensitive functions (authentication, cryptography, untrusted input).

Perceive, by signature (errors name the parameter, never contain the value):
- path parameters (`path_params` name convention: path, file, filename, file_name,
  filepath, dir, directory, folder...) given a str, bytes or os.PathLike: a NUL byte is
  rejected, so is a `..` segment (separators / and \\); an absolute path (/x, \\x, C:x,
  ~) too when reject_absolute_paths is on (off by default: many functions take absolute
  paths legitimately).
- every parameter (and each *args item and **kwargs value) given a str or bytes longer
  than max_input_chars is rejected.
Audit trail: see _shared.audit_parameters.
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import literal, name_matches
from poet_grpc.generator.domains._shared import audit_code, audit_parameters
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

PATH_TRAVERSAL = "path_traversal_guard"
INPUT_LENGTH = "input_length_limit"

PATHS = '''
import os
import re

_SEPARATORS = re.compile(r"[\\\\/]")


def _poet_check_path(parameter, value):
    """A path argument: no NUL byte, no '..' segment, and not absolute when reject_absolute_paths."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        return
    if "\\x00" in value:
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} must not contain a NUL byte")
    if ".." in _SEPARATORS.split(value):
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} must not contain a '..' path segment")
    if _POET_PARAMS["reject_absolute_paths"] and (
        value.startswith(("/", "\\\\", "~")) or (len(value) >= 2 and value[1] == ":" and value[0].isalpha())
    ):
        raise ValueError(f"{_POET_FUNCTION}() argument {parameter!r} must be a relative path")
'''

LENGTHS = '''
def _poet_check_length(parameter, value):
    """A str or bytes argument must not be longer than max_input_chars (0: no limit)."""
    limit = _POET_PARAMS["max_input_chars"]
    if limit and isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        raise ValueError(
            f"{_POET_FUNCTION}() argument {parameter!r} is longer than {limit} characters (max_input_chars)"
        )


def _poet_check_lengths(parameter, values):
    """_poet_check_length for each *args item ((index) in the name) or **kwargs value."""
    if isinstance(values, dict):
        for key, value in values.items():
            _poet_check_length(key, value)
    else:
        for index, value in enumerate(values):
            _poet_check_length(f"{parameter}[{index}]", value)
'''

PATH_NAMES = ["path", "file", "filename", "file_name", "filepath", "dir", "dirname", "directory", "folder"]


def code(target: Target) -> DomainCode:
    params = target.params
    perceive: list[str] = []
    features: list[str] = []
    for p in target.parameters:
        if p.named and name_matches(p.name, params["path_params"]):
            perceive.append(f"_poet_check_path({literal(p.name)}, {p.name})")
            features.append(PATH_TRAVERSAL)
        if params["max_input_chars"]:
            check = "_poet_check_length" if p.named else "_poet_check_lengths"
            perceive.append(f"{check}({literal(p.label)}, {p.name})")
            features.append(INPUT_LENGTH)
    runtime = ((PATHS,) if PATH_TRAVERSAL in features else ()) + ((LENGTHS,) if INPUT_LENGTH in features else ())
    own = DomainCode(runtime=runtime, perceive=tuple(perceive), perceive_features=tuple(dict.fromkeys(features)))
    return (own if perceive else DomainCode()) + audit_code(target)


DOMAIN = DomainInfo(
    name="security",
    description=(
        "Security-sensitive functions (authentication, cryptography, untrusted input). The base reliability "
        "stages without automatic retries (a retried authentication can trip lockouts) and with strict checks "
        "(container elements, NaN or infinite floats rejected). Perceive: path-like parameters (path, file, "
        "filename, dir...) must not contain NUL bytes or '..' segments (nor be absolute, if "
        "reject_absolute_paths); no str/bytes argument may exceed max_input_chars. These errors name the "
        "parameter and never contain the value. An audit trail of every call (SHA-256 digests, never raw "
        "values) in <function>.poet_audit and as audit.recorded events."
    ),
    parameters=reliability_parameters(max_retries=0, check_element_types=True, reject_non_finite_floats=True)
    + (
        DomainParam(
            "path_params",
            "Name convention of path parameters (an entry matches the name itself, entry_* and *_entry: path "
            "matches config_path).",
            PATH_NAMES,
        ),
        DomainParam(
            "reject_absolute_paths",
            "Also reject absolute paths (/x, \\x, C:x, ~x) in path parameters, for functions that must stay "
            "inside a base directory.",
            False,
        ),
        DomainParam(
            "max_input_chars",
            "Longest str or bytes argument accepted, in characters (bytes for bytes); 0 disables the check.",
            1_000_000,
            0,
        ),
    )
    + audit_parameters(True),
    code=code,
)
