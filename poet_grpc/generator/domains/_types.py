"""What a domain is: a name, an honest description, its parameters with defaults, and
the code it adds to a generated module (DomainCode, built from the function's signature)."""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from poet_grpc.generator._analysis import ModuleScope


@dataclass(frozen=True)
class DomainParam:
    """One tunable parameter of a domain."""

    name: str
    description: str
    """What the parameter controls, as the generated code applies it."""
    default: Any
    """JSON-compatible value used when the request does not set it."""
    minimum: float | None = None
    """Numbers: the smallest value config may set (checked at generation)."""
    maximum: float | None = None
    """Numbers: the largest value config may set (checked at generation)."""
    choices: tuple[str, ...] = ()
    """Strings: the values config may set (empty: any string)."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of the function being enhanced, as domain code builders see it."""

    name: str
    kind: str
    """POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD, VAR_POSITIONAL, KEYWORD_ONLY or VAR_KEYWORD."""
    annotation: ast.expr | None

    @property
    def named(self) -> bool:
        """A single value bound to the name (not *args or **kwargs)."""
        return self.kind not in ("VAR_POSITIONAL", "VAR_KEYWORD")

    @property
    def label(self) -> str:
        """The name as error messages and audit digests show it: `x`, `*args`, `**kwargs`."""
        return {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(self.kind, "") + self.name


@dataclass(frozen=True)
class Target:
    """The function a domain adds code to: its signature, its module, the version's params."""

    name: str
    is_async: bool
    is_generator: bool
    parameters: tuple[Parameter, ...]
    returns: ast.expr | None
    scope: ModuleScope
    tree: ast.Module
    params: Mapping[str, Any]

    @property
    def named(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.named)


@dataclass(frozen=True)
class DomainCode:
    """Source text one domain adds to a generated module. Every name it defines starts
    with `_poet_` / `_POET_`; the statements run inside the enhanced function, where
    the parameters are local variables, and call only `_poet_` helpers (a parameter may
    be called `len` or `dict`, so they never name a builtin).

    The renderer places the parts (poet_grpc.generator._domain_code.collect() prepares
    them; _render.py consumes them in one place):

    - runtime: module-level helper source (standard library only), after the base
      helpers. Each domain's helpers are defined inside one factory function that binds
      the builtins they use locally, so a module rebinding `sorted` or star-importing
      numpy cannot change them; the names starting with `_poet_`/`_POET_` are exported.
    - start: first statements of each call (inside the try, before the Perceive checks);
      they must not raise.
    - perceive: after the annotation checks (only when validate_inputs); may raise to
      reject an argument (counted as a rejected input) or rebind a parameter to a
      normalised value.
    - before_operate: right before the original is called (stage "operate").
    - enforce: on `_poet_result` after the return-annotation check (only when
      validate_outputs, never for generator functions); may raise to reject the result.
    - on_error: first statements of the except block (`_poet_error`, `_poet_stage` bound);
      guarded: an exception there is swallowed, the original error propagates.
    - on_success: after a successful call, before Train (`_poet_result` bound); guarded.
    - finish: module-level lines after the enhanced function exists (attributes on it).
    - features: names added to GeneratedCode.optimizations; perceive_features and
      enforce_features only when the perceive / enforce part is kept.
    """

    runtime: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    perceive: tuple[str, ...] = ()
    before_operate: tuple[str, ...] = ()
    enforce: tuple[str, ...] = ()
    on_error: tuple[str, ...] = ()
    on_success: tuple[str, ...] = ()
    finish: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    perceive_features: tuple[str, ...] = ()
    enforce_features: tuple[str, ...] = ()

    def __add__(self, other: DomainCode) -> DomainCode:
        """Both parts, this one's first; runtime blocks and features appear once."""
        merged: dict[str, tuple[str, ...]] = {}
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            merged[name] = tuple(dict.fromkeys(a + b)) if name == "runtime" or name.endswith("features") else a + b
        return DomainCode(**merged)


CodeBuilder = Callable[[Target], DomainCode]


@dataclass(frozen=True)
class DomainInfo:
    """A domain the generator knows."""

    name: str
    description: str
    """What the domain adds to a function, as generated today."""
    parameters: tuple[DomainParam, ...]
    code: CodeBuilder | None = field(default=None, compare=False, repr=False)
    """Builds the domain's own code for one function (None: the base stages only)."""


_RELIABILITY: tuple[DomainParam, ...] = (
    DomainParam(
        "max_retries",
        "Retries after a failed first attempt, only for transient errors (ConnectionError, TimeoutError "
        "and their subclasses); any other error propagates at once. 0 disables retrying.",
        3,
    ),
    DomainParam(
        "backoff_base_seconds",
        "Delay before the first retry; each later retry waits backoff_multiplier times longer.",
        0.1,
    ),
    DomainParam("backoff_multiplier", "Growth factor of the delay between consecutive retries (>= 1).", 2.0),
    DomainParam("backoff_max_seconds", "Upper bound of a single retry delay.", 10.0),
    DomainParam(
        "jitter",
        "Fraction of each retry delay removed at random (0: exact delays; 1: anywhere between zero and the "
        "delay), so callers that failed together do not retry together.",
        0.1,
    ),
    DomainParam(
        "timeout_seconds",
        "Deadline of the call; 0 disables it. An async function is cancelled at the deadline (the event "
        "loop's own timeout). A sync function is not interrupted (Python cannot stop it): no retry starts "
        "that would end past the deadline, counted from the first failure; see hard_timeout.",
        30.0,
    ),
    DomainParam(
        "hard_timeout",
        "Sync functions: run each call in a worker thread, so that the caller gets TimeoutError at "
        "timeout_seconds. Costs a thread per call (about 100 microseconds); the caller's thread-locals are "
        "not visible and its locks not held inside; after the TimeoutError the call runs on in the "
        "background until it returns. Off by default.",
        False,
    ),
    DomainParam(
        "validate_inputs",
        "Perceive: check arguments against simple type annotations (int, float, str, bool, list, dict, "
        "tuple, Optional/unions...), as annotation_checks says. Also switches the domain's own argument "
        "checks on or off.",
        True,
    ),
    DomainParam(
        "validate_outputs",
        "Enforce: check the result against a simple return annotation, as annotation_checks says. Also "
        "switches the domain's own result checks on or off.",
        True,
    ),
    DomainParam(
        "annotation_checks",
        "What a value its annotation does not allow does: \"observe\" (default): the call goes on as the "
        "original's would, the violation is counted (contract_violations) and reported once per parameter "
        "and type (a function.contract_violation event); \"enforce\": TypeError naming the parameter, the "
        "call refused (optimize_for=safety). Domain rules that refuse dangerous input always refuse it.",
        "observe",
        choices=("observe", "enforce"),
    ),
    DomainParam(
        "check_element_types",
        "Also check the elements of annotated containers (list[int], dict[str, float], tuple[int, str]...), "
        "at a cost proportional to their size.",
        False,
    ),
    DomainParam(
        "reject_non_finite_floats",
        "Reject NaN and infinite floats given to float-annotated parameters (ValueError) or returned "
        "from a float-annotated function.",
        False,
    ),
)
RELIABILITY_NAMES = tuple(p.name for p in _RELIABILITY)


def reliability_parameters(**defaults: Any) -> tuple[DomainParam, ...]:
    """The base reliability parameters, with some defaults changed for a domain."""
    unknown = set(defaults) - set(RELIABILITY_NAMES)
    if unknown:
        raise ValueError(f"not reliability parameters: {sorted(unknown)}")
    return tuple(
        DomainParam(p.name, p.description, defaults.get(p.name, p.default), p.minimum, p.maximum, p.choices)
        for p in _RELIABILITY
    )
