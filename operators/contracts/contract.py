"""The data contract format (``data_contracts/<dataset>.yaml``, ``kind: DataContract``): load and check.

Data stewards own these files. Each rule says what it checks, how bad a breach is (``error`` stops the
pipeline, ``warn`` asks a steward), why it exists and who owns it. Reading needs only PyYAML: contracts
are read at DAG parse time and by ``factory lint``; Great Expectations runs them (``rules.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from operators.typed_yaml import ConfigError, TypedReader, compose, line_of
from operators.units import duration, size_bytes
from operators.user_regex import pattern_problem

REPO = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO / "data_contracts"
API_VERSION = "aifactory/v1"

Severity = Literal["error", "warn"]
ColumnType = Literal["int", "float", "str", "bool", "datetime"]
EMAIL = {"pattern": r"[^@\s]{1,64}@[^@\s]{1,253}", "pattern_help": "an e-mail address"}
DURATION = {"pattern": r"[0-9]{1,7}[smhdw]", "pattern_help": "a number and a unit: s, m, h, d or w, e.g. 36h or 30d"}
SIZE = {"pattern": r"[0-9]{1,9}(\.[0-9]{1,6})?[KMGT]?B?",
        "pattern_help": "bytes with an optional unit, e.g. 500M or 2G"}
COLUMN_NAME = {"keys": r".{1,250}"}  # any text but control characters (the reader refuses those)
MAX_DURATION_DAYS = 3650  # ten years: beyond it a date computed from the duration leaves the calendar
NUMERIC: tuple[str, ...] = ("int", "float")


class ContractError(ConfigError):
    """A mistake in a contract file, or data a contract cannot be checked against: names file or dataset."""


@dataclass(frozen=True)
class Bounds:
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Quantile:
    q: float = field(metadata={"min": 0})
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Drift:
    """Against the newest accepted earlier version of the dataset: KL divergence of the column's histogram."""

    max_kl: float = field(metadata={"min": 0})
    bins: int = field(default=10, metadata={"min": 2, "max": 10_000})


CHECKS = ("range", "allowed", "unique", "pattern", "max_age", "mean", "quantiles", "drift")
# Which rules need which column types; the others fit any type.
CHECK_TYPES: dict[str, tuple[str, ...]] = {
    "range": NUMERIC, "mean": NUMERIC, "quantiles": NUMERIC, "drift": NUMERIC,
    "pattern": ("str",), "max_age": ("datetime",)}
# How each check meets data larger than memory (see data_contracts/README.md).
CHECK_MODES: dict[str, str] = {
    "type": "chunked", "nullable": "chunked", "range": "chunked", "allowed": "chunked", "pattern": "chunked",
    "unique": "column", "max_age": "column", "mean": "sampled", "quantiles": "sampled", "drift": "sampled"}


@dataclass(frozen=True)
class Rule:
    """One check on one column; exactly one of the check fields is given."""

    description: str
    severity: Severity = "error"
    owner: str | None = field(default=None, metadata=EMAIL)
    range: Bounds | None = None
    allowed: list[Any] | None = None
    unique: bool | None = None
    pattern: str | None = None
    max_age: str | None = field(default=None, metadata=DURATION)
    mean: Bounds | None = None
    quantiles: list[Quantile] | None = None
    drift: Drift | None = None

    @property
    def check(self) -> str:
        return next(name for name in CHECKS if getattr(self, name) is not None)


@dataclass(frozen=True)
class Column:
    type: ColumnType
    description: str = ""
    nullable: bool = True
    severity: Severity = "error"  # of the type and nullability checks
    rules: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class RowCount:
    description: str
    min: int | None = field(default=None, metadata={"min": 0})
    max: int | None = field(default=None, metadata={"min": 0})
    severity: Severity = "error"
    owner: str | None = field(default=None, metadata=EMAIL)


@dataclass(frozen=True)
class Validation:
    """Where and how the data is validated: on the Airflow worker, or as a Slurm job above a size."""

    cluster_above: str = field(default="1G", metadata=SIZE)
    chunk_rows: int = field(default=1_000_000, metadata={"min": 1000, "max": 100_000_000})
    sample_rows: int = field(default=1_000_000, metadata={"min": 1000, "max": 100_000_000})

    @property
    def cluster_above_bytes(self) -> int:
        return size_bytes(self.cluster_above)


@dataclass(frozen=True)
class Review:
    """What a steward decision on warnings looks like: how long the pipeline waits and what then."""

    timeout: str = field(default="24h", metadata=DURATION)
    on_timeout: Literal["approve", "reject"] = "reject"

    @property
    def timeout_delta(self) -> timedelta:
        return duration(self.timeout)


@dataclass(frozen=True)
class Contract:
    apiVersion: Literal["aifactory/v1"]  # the YAML key
    kind: Literal["DataContract"]
    dataset: str = field(metadata={"pattern": r"[a-z][a-z0-9_-]*", "pattern_help": "lower-case name"})
    description: str
    owner: str = field(metadata=EMAIL)
    columns: dict[str, Column] = field(metadata=COLUMN_NAME)
    format: Literal["csv", "parquet", "shards"] = "csv"  # shards: the manifest of a sharded folder, a row per file
    rows: RowCount | None = None
    extra_columns: Literal["error", "warn", "allow"] = "error"
    validation: Validation = field(default_factory=Validation)
    review: Review = field(default_factory=Review)
    file: Path = field(default=Path(), compare=False, metadata={"loaded": True})
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False, metadata={"loaded": True})

    def line_of(self, where: str) -> int:
        return line_of(self.lines, where)


def contract_path(name: str, contracts_dir: Path = CONTRACTS_DIR) -> Path:
    return contracts_dir / f"{name}.yaml"


def load_contract(path: Path) -> Contract:
    """Read and check one contract; ``ContractError.errors`` lists every mistake found after reading."""
    reader = TypedReader(path, ContractError, "contract")
    root = compose(path, ContractError, "contract", f"apiVersion: {API_VERSION}, kind: DataContract, dataset: ...")
    contract = replace(reader.read_record(Contract, root, ""), file=path, lines=reader.lines)
    reader.fail_all(list(_problems(contract, path)))
    return contract


def _problems(contract: Contract, path: Path):
    """What types cannot say: one check per rule, checks that fit the column, bounds in order."""
    if contract.dataset != path.stem:
        yield "dataset", f"{contract.dataset!r} must match the file name {path.stem!r}"
    if contract.rows is not None:
        yield from _bounds("rows", contract.rows.min, contract.rows.max)
    if duration(contract.review.timeout).days > MAX_DURATION_DAYS:
        yield "review.timeout", f"{contract.review.timeout!r} is more than {MAX_DURATION_DAYS} days"
    for name, column in contract.columns.items():
        for index, rule in enumerate(column.rules):
            where = f"columns.{name}.rules.{index}"
            given = [check for check in CHECKS if getattr(rule, check) is not None]
            if len(given) != 1:
                yield where, (f"give exactly one check, got {', '.join(given) or 'none'} "
                              f"(checks: {', '.join(CHECKS)})")
                continue
            check = given[0]
            allowed_types = CHECK_TYPES.get(check)
            if allowed_types and column.type not in allowed_types:
                yield f"{where}.{check}", (f"a {check} rule needs a column of type {' or '.join(allowed_types)}; "
                                           f"{name} is {column.type}")
            yield from _rule_problems(f"{where}.{check}", rule, column)


def _rule_problems(where: str, rule: Rule, column: Column):
    if rule.range is not None:
        yield from _bounds(where, rule.range.min, rule.range.max)
    if rule.mean is not None:
        yield from _bounds(where, rule.mean.min, rule.mean.max)
    if rule.unique is False:
        yield where, "write unique: true, or leave the rule out"
    if rule.allowed is not None:
        if not rule.allowed:
            yield where, "list at least one allowed value"
        kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}.get(column.type)
        wrong = [value for value in rule.allowed if kinds and (not isinstance(value, kinds) or
                                                                (isinstance(value, bool) and bool not in kinds))]
        if wrong:
            yield where, f"{wrong!r} do not fit the column's type {column.type}"
    if rule.pattern is not None:
        reason = pattern_problem(rule.pattern)
        if reason:
            yield where, reason
    if rule.max_age is not None and duration(rule.max_age).days > MAX_DURATION_DAYS:
        yield where, f"{rule.max_age!r} is more than {MAX_DURATION_DAYS} days"
    for index, quantile in enumerate(rule.quantiles or []):
        if quantile.q > 1:
            yield f"{where}.{index}.q", f"{quantile.q} must be between 0 and 1"
        yield from _bounds(f"{where}.{index}", quantile.min, quantile.max)
    if rule.quantiles == []:
        yield where, "list at least one quantile"


def _bounds(where: str, low: float | None, high: float | None):
    if low is None and high is None:
        yield where, "give min, max or both"
    elif low is not None and high is not None and low > high:
        yield where, f"min {low} is above max {high}"

