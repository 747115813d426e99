"""A contract's ``pattern`` rule as a Great Expectations expectation that runs RE2, not Python's ``re``.

GX's own ``ExpectColumnValuesToMatchRegex`` runs the pattern with pandas' ``str.contains`` (Python ``re``,
backtracking): a steward's ``(a+)+`` over one long value would stall validation for hours. This one is the
same expectation (its Data Docs rendering, its result format, its ``mostly``) with the metric computed by
RE2 in time linear in the data (``operators.user_regex``). RE2's ``$`` is the end of the text (never
before a final line break), so ``^(?:rule)$`` is a whole-value match.
"""

from __future__ import annotations

from typing import Any

import great_expectations.expectations as gxe
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial

from operators.user_regex import compile_pattern


class ColumnValuesMatchRegexRe2(ColumnMapMetricProvider):
    condition_metric_name = "column_values.match_regex_re2"
    condition_value_keys = ("regex",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: Any, regex: str, **kwargs: Any) -> Any:
        pattern = compile_pattern(regex)
        return column.astype(str).map(lambda value: pattern.search(value) is not None)


class ExpectColumnValuesToMatchRegexRe2(gxe.ExpectColumnValuesToMatchRegex):
    """Every value matches ``regex`` (RE2 syntax: no back-references or look-around)."""

    map_metric = "column_values.match_regex_re2"
