"""prompt_optimization: functions that build or select prompts.

Perceive, by signature:
- template parameters (`template_params` name convention: template, prompt_template...)
  given a str: the `{placeholders}` it uses (str.format syntax, parsed with
  string.Formatter; positional {} / {0} fields and fields that are not identifiers, as in
  literal JSON braces, are ignored) must all be supplied, else ValueError naming the
  template parameter and the missing names (names only, never values). Supplied means:
  a key of **kwargs, the name of another parameter of the function, or a key of a
  mapping argument named by `template_values_params` (variables, values, context...).
  The check is generated only when the function has **kwargs or such a mapping
  parameter (otherwise there is no way to know what it fills the template with); a
  template that str.format cannot parse is left to the function.
- prompt parameters longer than max_prompt_chars are rejected (as in llm_optimization).
Enforce: a str result longer than max_prompt_chars is rejected (a built prompt too long
to send).
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import literal, name_matches
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters
from poet_grpc.generator.domains.llm_optimization import PROMPT_LENGTH, PROMPT_NAMES, prompt_code

PLACEHOLDERS = "template_placeholder_check"

TEMPLATE = '''
import string


def _poet_placeholders(template):
    """Names of the {fields} a str.format template uses (identifiers only), or None if it does not parse."""
    names = []
    try:
        for _, field, _, _ in string.Formatter().parse(template):
            if field is None:
                continue
            head = field.split(".", 1)[0].split("[", 1)[0]
            if head.isidentifier() and head not in names:
                names.append(head)
    except (ValueError, TypeError):
        return None
    return names


def _poet_check_template(parameter, template, supplied, mappings):
    """Every placeholder of the template must be supplied (names, or keys of the mappings)."""
    if not _POET_PARAMS["check_template_placeholders"] or not isinstance(template, str):
        return
    used = _poet_placeholders(template)
    if not used:
        return
    known = set(supplied)
    for mapping in mappings:
        if isinstance(mapping, dict):
            known.update(k for k in mapping if isinstance(k, str))
        elif mapping is not None:
            return  # not a dict: cannot tell what it supplies
    missing = [name for name in used if name not in known]
    if missing:
        raise ValueError(
            f"{_POET_FUNCTION}() argument {parameter!r} uses placeholders that are not supplied: "
            + ", ".join("{" + name + "}" for name in missing)
        )
'''

RESULT = '''
def _poet_check_prompt_result(result):
    """Enforce: a str result (a built prompt) must not be longer than max_prompt_chars (0: no limit)."""
    limit = _POET_PARAMS["max_prompt_chars"]
    if limit and isinstance(result, str) and len(result) > limit:
        raise ValueError(f"{_POET_FUNCTION}() result is longer than {limit} characters (max_prompt_chars)")
'''

TEMPLATE_NAMES = ["template", "prompt_template", "system_template", "user_template"]
VALUES_NAMES = ["variables", "values", "context", "params", "inputs", "fields", "substitutions", "mapping"]


def code(target: Target) -> DomainCode:
    params = target.params
    templates = [p for p in target.named if name_matches(p.name, params["template_params"])]
    kwargs = next((p for p in target.parameters if p.kind == "VAR_KEYWORD"), None)
    value_maps = [
        p for p in target.named if p not in templates and name_matches(p.name, params["template_values_params"])
    ]
    perceive: list[str] = []
    if params["check_template_placeholders"] and templates and (kwargs or value_maps):
        for template in templates:
            others = [p.name for p in target.named if p is not template]
            mappings = [p.name for p in value_maps] + ([kwargs.name] if kwargs else [])
            names = "(" + "".join(f"{literal(n)}, " for n in others) + ")"
            maps = "(" + "".join(f"{m}, " for m in mappings) + ")"
            perceive.append(f"_poet_check_template({literal(template.name)}, {template.name}, {names}, {maps})")
    enforce: tuple[str, ...] = ()
    if params["max_prompt_chars"]:
        enforce = ("_poet_check_prompt_result(_poet_result)",)
    runtime = ((TEMPLATE,) if perceive else ()) + ((RESULT,) if enforce else ())
    own = DomainCode(
        runtime=runtime,
        perceive=tuple(perceive),
        enforce=enforce,
        perceive_features=(PLACEHOLDERS,) if perceive else (),
        enforce_features=(PROMPT_LENGTH,) if enforce else (),
    )
    return prompt_code(target) + own


DOMAIN = DomainInfo(
    name="prompt_optimization",
    description=(
        "Functions that build or select prompts. The base reliability stages with default settings. Perceive: "
        "a template parameter (template, prompt_template...) must not use {placeholders} that the call does not "
        "supply (via **kwargs, other parameters, or a variables/values/context mapping), checked when the "
        "function has one of those; prompt parameters longer than max_prompt_chars are rejected. Enforce: a str "
        "result longer than max_prompt_chars is rejected. Errors name parameters and placeholders, never values."
    ),
    parameters=reliability_parameters()
    + (
        DomainParam(
            "check_template_placeholders",
            "Reject a template whose {placeholders} are not all supplied (ValueError naming them).",
            True,
        ),
        DomainParam(
            "template_params",
            "Name convention of template parameters (an entry matches the name itself, entry_* and *_entry).",
            TEMPLATE_NAMES,
        ),
        DomainParam(
            "template_values_params",
            "Name convention of mapping parameters whose keys supply a template's placeholders.",
            VALUES_NAMES,
        ),
        DomainParam(
            "prompt_params", "Name convention of prompt parameters checked against max_prompt_chars.", PROMPT_NAMES
        ),
        DomainParam(
            "max_prompt_chars",
            "Longest prompt accepted, in characters: prompt arguments and str results; 0: no limit.",
            100_000,
            0,
        ),
    ),
    code=code,
)
