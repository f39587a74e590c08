"""data_processing: batch and ETL functions.

Row sequences: parameters annotated list[X] / List[X] / Sequence[X] / tuple[X, ...], or
named by the `row_params` convention (rows, records, data, batch, items...), given a
list or tuple (never an iterator: it would be consumed).

Perceive:
- reject_none_rows: a None row in a sequence annotated with a concrete element type
  (a builtin like int, str or dict, a typing container, or a class the module defines;
  not Optional, Any, object, TypeVars or unknown names) raises TypeError naming the
  parameter and the row's index.
- max_null_fraction: when below 1, a row sequence whose share of missing rows (None, or
  a float NaN) exceeds it raises ValueError naming the parameter.
Train: <function>.poet_metrics counts rows_in (rows of every row-sequence argument),
rows_out (len() of a list, tuple or dict result) and null_rows_in (missing rows seen).
"""

from __future__ import annotations

from poet_grpc.generator.domains._conventions import is_concrete, is_sequence, literal, name_matches, sequence_element
from poet_grpc.generator.domains._types import DomainCode, DomainInfo, DomainParam, Target, reliability_parameters

NONE_ROWS = "none_row_rejection"
NULL_CAP = "missing_row_limit"
ROW_METRICS = "row_count_metrics"

ROWS = '''
import math

_POET_METRICS.setdefault("rows_in", 0)
_POET_METRICS.setdefault("rows_out", 0)
_POET_METRICS.setdefault("null_rows_in", 0)


def _poet_missing(row):
    return row is None or (isinstance(row, float) and math.isnan(row))


def _poet_check_rows(parameter, rows, concrete):
    """Perceive: None rows where the element type is concrete; the missing share against max_null_fraction."""
    if not isinstance(rows, (list, tuple)):
        return
    if concrete and _POET_PARAMS["reject_none_rows"]:
        for index, row in enumerate(rows):
            if row is None:
                raise TypeError(f"{_POET_FUNCTION}() argument {parameter!r} has a None row at index {index}")
    limit = _POET_PARAMS["max_null_fraction"]
    if limit < 1.0 and rows:
        missing = sum(1 for row in rows if _poet_missing(row))
        if missing / len(rows) > limit:
            raise ValueError(
                f"{_POET_FUNCTION}() argument {parameter!r} has {missing} missing rows of {len(rows)}, "
                f"more than max_null_fraction ({limit})"
            )


def _poet_count_rows(inputs, result):
    """Train: add the row counts of one successful call to the metrics."""
    rows = nulls = 0
    for value in inputs:
        if isinstance(value, (list, tuple)):
            rows += len(value)
            nulls += sum(1 for row in value if _poet_missing(row))
    out = len(result) if isinstance(result, (list, tuple, dict)) else 0
    with _poet_metrics_lock:
        _POET_METRICS["rows_in"] += rows
        _POET_METRICS["rows_out"] += out
        _POET_METRICS["null_rows_in"] += nulls
'''

ROW_NAMES = ["rows", "records", "data", "dataset", "batch", "items", "entries"]


def code(target: Target) -> DomainCode:
    params = target.params
    rows = [
        p
        for p in target.named
        if is_sequence(p.annotation, target) or name_matches(p.name, params["row_params"])
    ]
    if not rows:
        return DomainCode()
    perceive: list[str] = []
    features: list[str] = []  # of the perceive part
    for p in rows:
        concrete = is_concrete(sequence_element(p.annotation, target), target)
        if concrete and params["reject_none_rows"]:
            features.append(NONE_ROWS)
        if params["max_null_fraction"] < 1.0:
            features.append(NULL_CAP)
        if concrete or params["max_null_fraction"] < 1.0:
            perceive.append(f"_poet_check_rows({literal(p.name)}, {p.name}, {concrete})")
    inputs = "(" + "".join(f"{p.name}, " for p in rows) + ")"
    return DomainCode(
        runtime=(ROWS,),
        perceive=tuple(perceive),
        on_success=(f"_poet_count_rows({inputs}, _poet_result)",),
        features=(ROW_METRICS,),
        perceive_features=tuple(dict.fromkeys(features)),
    )


DOMAIN = DomainInfo(
    name="data_processing",
    description=(
        "Batch and ETL functions. The base reliability stages with a 300 s deadline; container elements are not "
        "type-checked by default (that costs time proportional to the data). Row sequences (parameters annotated "
        "list[X]/Sequence[X] or named rows, records, data, batch...): a None row where X is a concrete type is "
        "rejected (TypeError naming the parameter and index), the share of missing rows can be capped "
        "(max_null_fraction), and poet_metrics counts rows_in, rows_out and null_rows_in."
    ),
    parameters=reliability_parameters(timeout_seconds=300.0)
    + (
        DomainParam(
            "reject_none_rows",
            "Reject None rows in sequences annotated with a concrete, non-Optional element type (list[dict], "
            "list[Record]...).",
            True,
        ),
        DomainParam(
            "max_null_fraction",
            "Largest share of missing rows (None or NaN) a row sequence may have; 1.0 disables the check.",
            1.0,
            0.0,
            1.0,
        ),
        DomainParam(
            "row_params",
            "Name convention of row-sequence parameters besides list/Sequence annotations (an entry matches the "
            "name itself, entry_* and *_entry).",
            ROW_NAMES,
        ),
    ),
    code=code,
)
