"""Compile a contract to Great Expectations 1.x expectations, grouped by how they meet large data.

- ``schema``: column existence and the column set, checked once on the first chunk;
- ``chunked``: row-wise rules (type, nullability, range, allowed, pattern), run on every chunk; exact;
- ``column``: uniqueness and freshness, run on the column alone, read in full; exact;
- ``sampled``: mean, quantiles, drift, run on a seeded uniform sample; exact when the data fits the sample;
- ``table``: the row count, run on a frame with the counted rows and no columns; exact.

Every expectation carries the rule's id, severity, description and owner in ``meta``, so each result
maps back to the contract line a steward wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from operators.contracts.contract import CHECK_MODES, Column, Contract, Rule

# Pandas' nullable dtypes by their class names: GX 1.x looks them up as attributes of pandas.
TYPE_LISTS = {
    "int": ["int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "Int64Dtype", "Int32Dtype"],
    "float": ["float64", "float32", "Float64Dtype", "int64", "int32", "Int64Dtype"],
    "str": ["object", "str", "string", "large_string"],
    "bool": ["bool", "boolean", "BooleanDtype"],
    "datetime": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}
MODES = ("schema", "chunked", "column", "sampled", "table")


@dataclass
class CompiledRule:
    """One contract rule as a steward reads it, and the GX expectation that checks it (None: not run)."""

    id: str
    check: str
    column: str | None
    severity: str
    description: str
    owner: str
    mode: str
    line: int
    expectation: Any = None
    skipped: str = ""  # why the rule did not run (e.g. no accepted earlier version for drift)

    def meta(self) -> dict[str, Any]:
        return {"rule": self.id, "check": self.check, "severity": self.severity, "owner": self.owner,
                "description": self.description, "mode": self.mode}


@dataclass
class CompiledContract:
    rules: list[CompiledRule] = field(default_factory=list)

    def in_mode(self, mode: str) -> list[CompiledRule]:
        return [rule for rule in self.rules if rule.mode == mode and rule.expectation is not None]

    def columns_in_mode(self, mode: str) -> list[str]:
        return sorted({rule.column for rule in self.in_mode(mode) if rule.column})


def compile_contract(contract: Contract, present: list[str], baseline: dict[str, dict[str, list[float]]],
                     now: datetime | None = None) -> CompiledContract:
    """The expectations for data with columns ``present``; ``baseline`` holds the last accepted version's
    histograms for drift rules. Rules on a missing column are left out: its existence rule fails."""
    import great_expectations.expectations as gxe

    now = now or datetime.now(UTC).replace(tzinfo=None)
    compiled = CompiledContract()

    def add(rule_id: str, check: str, column: str | None, severity: str, description: str, owner: str | None,
            expectation_class: Any = None, mode: str | None = None, skipped: str = "", **kwargs: Any) -> None:
        entry = CompiledRule(rule_id, check, column, severity, description, owner or contract.owner,
                             mode or CHECK_MODES.get(check, "schema"), contract.line_of(rule_id), skipped=skipped)
        if expectation_class is not None:
            column_kwargs = {"column": column} if column is not None else {}
            entry.expectation = expectation_class(**column_kwargs, **kwargs, meta=entry.meta(), notes=description)
        compiled.rules.append(entry)

    if contract.rows is not None:
        rows = contract.rows
        add("rows", "rows", None, rows.severity, rows.description, rows.owner, gxe.ExpectTableRowCountToBeBetween,
            mode="table", min_value=rows.min, max_value=rows.max)
    if contract.extra_columns != "allow":
        add("extra_columns", "columns", None, contract.extra_columns,
            "No columns beyond the contract's: a new column needs a contract change first.", None,
            gxe.ExpectTableColumnsToMatchSet, column_set=list(contract.columns), exact_match=True)
    for name, column in contract.columns.items():
        where = f"columns.{name}"
        add(f"{where}.exists", "exists", name, "error", f"Column {name} is present.", None, gxe.ExpectColumnToExist)
        if name not in present:
            continue
        add(f"{where}.type", "type", name, column.severity, f"{name} holds {column.type} values.", None,
            gxe.ExpectColumnValuesToBeInTypeList, type_list=TYPE_LISTS[column.type])
        if not column.nullable:
            add(f"{where}.nullable", "nullable", name, column.severity, f"{name} has no missing values.", None,
                gxe.ExpectColumnValuesToNotBeNull)
        for index, rule in enumerate(column.rules):
            _add_rule(add, f"{where}.rules.{index}", name, column, rule, baseline.get(name), now)
    return compiled


def _add_rule(add, rule_id: str, name: str, column: Column, rule: Rule, baseline: dict[str, list[float]] | None,
              now: datetime) -> None:
    import great_expectations.expectations as gxe

    check = rule.check
    common = (rule_id, check, name, rule.severity, rule.description, rule.owner)
    if check == "range":
        add(*common, gxe.ExpectColumnValuesToBeBetween, min_value=rule.range.min, max_value=rule.range.max)
    elif check == "allowed":
        add(*common, gxe.ExpectColumnValuesToBeInSet, value_set=rule.allowed)
    elif check == "pattern":
        from operators.contracts.pattern_expectation import ExpectColumnValuesToMatchRegexRe2

        add(*common, ExpectColumnValuesToMatchRegexRe2, regex=f"^(?:{rule.pattern})$")
    elif check == "unique":
        add(*common, gxe.ExpectColumnValuesToBeUnique)
    elif check == "max_age":
        from operators.units import duration

        add(*common, gxe.ExpectColumnMaxToBeBetween, min_value=now - duration(rule.max_age))
    elif check == "mean":
        add(*common, gxe.ExpectColumnMeanToBeBetween, min_value=rule.mean.min, max_value=rule.mean.max)
    elif check == "quantiles":
        add(*common, gxe.ExpectColumnQuantileValuesToBeBetween, quantile_ranges={
            "quantiles": [quantile.q for quantile in rule.quantiles],
            "value_ranges": [[quantile.min, quantile.max] for quantile in rule.quantiles]})
    elif check == "drift":
        if baseline is None:
            add(*common, skipped="no earlier accepted version of the dataset to compare with")
        else:
            add(*common, gxe.ExpectColumnKLDivergenceToBeLessThan, partition_object=baseline,
                threshold=rule.drift.max_kl, bucketize_data=True, tail_weight_holdout=1e-4)
