"""What changed in a dataset's columns against its contract: the unexpected ones, the missing ones, and
which unexpected column is likely a missing one renamed.

"31 columns observed" tells a steward nothing; "``mean radius`` is missing, ``mean_radius`` is new, and its
values fit the contract's rules for ``mean radius``" tells them what to ask the data's producer. A rename is
proposed only when the new column's values fit everything the contract says of the missing one (type,
missing values, range, allowed values) and, where the last accepted version left a histogram of it, lie in
that histogram's span; among several fits the closest distribution, then the closest name, wins.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from operators.contracts.contract import Column, Contract

OUTSIDE_SPAN_ALLOWED = 0.05  # the share of values a renamed column may have outside the old one's histogram


@dataclass(frozen=True)
class ColumnChanges:
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # the contract's name -> the name in the data

    def __bool__(self) -> bool:
        return bool(self.unexpected or self.missing)

    def of_missing(self, column: str) -> ColumnChanges:
        """What concerns one missing column: its absence and its likely new name."""
        return ColumnChanges(missing=[column], renamed={column: self.renamed[column]} if column in self.renamed else {})

    def as_dict(self) -> dict[str, Any]:
        return {"unexpected_columns": self.unexpected, "missing_columns": self.missing,
                "likely_renames": self.renamed}


def describe(changes: dict[str, Any]) -> str:
    """One line for a steward, from ``ColumnChanges.as_dict()`` (as stored in the summary)."""
    parts = []
    if changes.get("unexpected_columns"):
        parts.append(f"unexpected column(s) {_names(changes['unexpected_columns'])}")
    if changes.get("missing_columns"):
        parts.append(f"missing column(s) {_names(changes['missing_columns'])}")
    for old, new in changes.get("likely_renames", {}).items():
        parts.append(f"likely renamed: {old!r} -> {new!r} (its values fit the contract's rules for {old!r})")
    return "; ".join(parts)


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def column_changes(frame: Any, contract: Contract, baseline: dict[str, dict[str, list[float]]]) -> ColumnChanges:
    """``frame``: the first rows of the data (every column of it)."""
    present = [str(name) for name in frame.columns]
    unexpected = [name for name in present if name not in contract.columns]
    missing = [name for name in contract.columns if name not in present]
    candidates = sorted(
        ((_distance(frame[new], baseline.get(old)), -difflib.SequenceMatcher(None, old, new).ratio(), old, new)
         for old in missing for new in unexpected if _fits(frame[new], contract.columns[old], baseline.get(old))),
    )
    renamed: dict[str, str] = {}
    for *_closeness, old, new in candidates:
        if old not in renamed and new not in renamed.values():
            renamed[old] = new
    return ColumnChanges(unexpected, missing, dict(sorted(renamed.items())))


def _fits(values: Any, column: Column, profile: dict[str, list[float]] | None) -> bool:
    import pandas as pd

    if not _type_fits(values.dtype, column.type):
        return False
    present = values.dropna()
    if not column.nullable and len(present) < len(values):
        return False
    for rule in column.rules:
        if rule.range is not None and len(present) and not _within(present, rule.range.min, rule.range.max):
            return False
        if rule.allowed is not None and not present.isin(rule.allowed).all():
            return False
    if profile and len(present) and pd.api.types.is_numeric_dtype(values.dtype):
        outside = (present < profile["bins"][0]) | (present > profile["bins"][-1])
        if outside.mean() > OUTSIDE_SPAN_ALLOWED:
            return False
    return True


def _type_fits(dtype: Any, wanted: str) -> bool:
    import pandas as pd

    types = pd.api.types
    if types.is_bool_dtype(dtype):
        return wanted == "bool"
    if wanted == "int":
        return types.is_integer_dtype(dtype)
    if wanted == "float":
        return types.is_numeric_dtype(dtype)
    if wanted == "str":
        return types.is_object_dtype(dtype) or types.is_string_dtype(dtype)
    return wanted == "datetime" and types.is_datetime64_any_dtype(dtype)


def _within(values: Any, low: float | None, high: float | None) -> bool:
    return (low is None or values.min() >= low) and (high is None or values.max() <= high)


def _distance(values: Any, profile: dict[str, list[float]] | None) -> float:
    """KL divergence of the values' histogram from the old column's (on its bins); 0 without one."""
    import numpy as np
    import pandas as pd

    if not profile or not pd.api.types.is_numeric_dtype(values.dtype):
        return 0.0
    present = values.dropna().to_numpy(dtype=float)
    if len(present) == 0:
        return math.inf
    counts, _edges = np.histogram(np.clip(present, profile["bins"][0], profile["bins"][-1]), bins=profile["bins"])
    observed = (counts + 1e-6) / (counts.sum() + 1e-6 * len(counts))
    expected = np.asarray(profile["weights"]) + 1e-6
    return float(np.sum(observed * np.log(observed / expected)))
