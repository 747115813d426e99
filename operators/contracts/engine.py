"""Run a compiled contract over a data file in bounded memory, with Great Expectations as the engine.

One pass over the file in chunks of ``validation.chunk_rows``: row-wise expectations run on each chunk
and their counts are summed; the columns of uniqueness and freshness rules are kept whole; a seeded
uniform sample (bottom-k of random keys) of ``validation.sample_rows`` rows feeds the distribution rules.
The same code runs on the Airflow worker and in the Slurm validation job. Imports pandas and GX lazily.
"""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from operators.contracts.column_changes import ColumnChanges, column_changes
from operators.contracts.contract import Contract, ContractError
from operators.contracts.suite import MODES, CompiledContract, CompiledRule, compile_contract

PARTIAL_VALUES = 20


def open_chunks(path: Path, contract: Contract, where: str) -> tuple[list[str], Iterator[Any]]:
    """The file's columns and an iterator of DataFrame chunks; unreadable files raise ContractError."""
    import pandas as pd

    if not path.exists():
        raise ContractError(f"{where}: the data file is missing")
    if path.stat().st_size == 0:
        raise ContractError(f"{where}: the data file is empty (0 bytes)")
    chunk_rows = contract.validation.chunk_rows
    dates = [name for name, column in contract.columns.items() if column.type == "datetime"]
    texts = [name for name, column in contract.columns.items() if column.type == "str"]
    ints = [name for name, column in contract.columns.items() if column.type == "int"]
    if contract.format == "shards":
        return _manifest_chunks(path, where, chunk_rows)
    if contract.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path, pre_buffer=False)  # read-ahead keeps every row group read so far
        except (pa.ArrowInvalid, OSError) as error:
            raise ContractError(f"{where}: cannot be read as parquet (the contract's format): {error}") from None
        columns = list(parquet.schema_arrow.names)
        batches = (batch.to_pandas() for batch in parquet.iter_batches(batch_size=chunk_rows))
        return columns, _checked(batches, where, "parquet", dates, texts, ints)
    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
        reader = pd.read_csv(path, chunksize=chunk_rows, parse_dates=[name for name in dates if name in columns])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ContractError(f"{where}: cannot be read as CSV (the contract's format): {error}") from None
    return columns, _checked(reader, where, "CSV", dates, texts, ints)


def _manifest_chunks(path: Path, where: str, chunk_rows: int) -> tuple[list[str], Iterator[Any]]:
    """A sharded folder's manifest as a table, a row per file: ``path`` (inside the folder) and ``shard``.
    Only the small manifest is read; a contract checks the file count, names and their spread over shards."""
    import json

    import pandas as pd

    from operators.shard_manifest import MANIFEST_FORMAT

    try:
        manifest = json.loads(path.read_text())
        index = manifest["index"] if manifest.get("format") == MANIFEST_FORMAT else None
    except (ValueError, UnicodeDecodeError, TypeError, KeyError) as error:
        raise ContractError(f"{where}: cannot be read as a shard manifest (the contract's format): {error}") from None
    if not isinstance(index, dict):
        raise ContractError(f"{where}: not a shard manifest ({MANIFEST_FORMAT}) of operators.datasets.shards")
    frame = pd.DataFrame(sorted(index.items()), columns=["path", "shard"], dtype=object)
    return ["path", "shard"], (frame.iloc[start:start + chunk_rows] for start in range(0, len(frame), chunk_rows))


def _checked(chunks: Iterator[Any], where: str, kind: str, dates: list[str], texts: list[str],
             ints: list[str]) -> Iterator[Any]:
    """Chunks with time zones normalised to naive UTC; text columns as object (pandas 3 reads text as
    StringDtype, which GX 1.x's type check does not take for str; a chunk with no text at all reads as
    float); whole numbers in an int column as Int64 (CSV and Arrow make a column with gaps float, so
    chunks would differ). A read error mid-file names the file's format."""
    import pandas as pd

    try:
        for chunk in chunks:
            for name in dates:
                if name in chunk and isinstance(chunk[name].dtype, pd.DatetimeTZDtype):
                    chunk[name] = chunk[name].dt.tz_convert(None)
            for name in texts:
                if name in chunk and (isinstance(chunk[name].dtype, pd.StringDtype) or chunk[name].isna().all()):
                    chunk[name] = chunk[name].astype(object)
            for name in ints:
                values = chunk.get(name)
                if values is not None and pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
                    chunk[name] = values.astype("Int64")
            yield chunk
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as error:
        raise ContractError(f"{where}: cannot be read as {kind} (the contract's format): {error}") from None


class _Runner:
    """One ephemeral GX context, one suite per mode, validated batch by batch."""

    def __init__(self, compiled: CompiledContract) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX md5-hashes every DataFrame under 1 GB for a batch marker, twice per validation: ~40 % of the
        # time on chunks. The marker is not used here; a threshold of 0 skips it.
        pandas_execution_engine.HASH_THRESHOLD = 0
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars in task logs
        asset = self.context.data_sources.add_pandas("contract").add_dataframe_asset("data")
        self.batches = asset.add_batch_definition_whole_dataframe("chunk")
        self.suites = {}
        for mode in MODES:
            rules = compiled.in_mode(mode)
            if rules:
                self.suites[mode] = self.context.suites.add(gx.ExpectationSuite(
                    name=f"contract-{mode}", expectations=[copy.copy(rule.expectation) for rule in rules]))

    def run(self, mode: str, frame: Any) -> list[Any]:
        if mode not in self.suites:
            return []
        batch = self.batches.get_batch(batch_parameters={"dataframe": frame})
        return list(batch.validate(self.suites[mode], result_format="BASIC").results)


def _merge(total: dict[str, Any], outcome: Any) -> None:
    """Add one chunk's result of a row-wise expectation to the running total (exact: counts add up)."""
    rule = outcome.expectation_config.meta["rule"]
    if rule not in total:
        total[rule] = outcome
        return
    kept = total[rule]
    kept.success = bool(kept.success and outcome.success)
    if outcome.exception_info and outcome.exception_info.get("raised_exception"):
        kept.exception_info = outcome.exception_info
    for key in ("element_count", "unexpected_count", "missing_count"):
        if key in outcome.result:
            kept.result[key] = kept.result.get(key, 0) + outcome.result[key]
    partial = kept.result.get("partial_unexpected_list")
    if partial is not None and len(partial) < PARTIAL_VALUES:
        partial.extend(outcome.result.get("partial_unexpected_list", [])[:PARTIAL_VALUES - len(partial)])
    elements = kept.result.get("element_count") or 0
    if elements and "unexpected_count" in kept.result:
        kept.result["unexpected_percent"] = 100.0 * kept.result["unexpected_count"] / elements


class _Sample:
    """A seeded uniform sample without replacement: the rows with the ``size`` smallest random keys."""

    def __init__(self, size: int, columns: list[str]) -> None:
        import numpy as np

        self.size, self.columns, self.rng, self.frame = size, columns, np.random.default_rng(0), None

    def add(self, chunk: Any) -> None:
        import pandas as pd

        if not self.columns:
            return
        part = chunk[self.columns].assign(_key=self.rng.random(len(chunk)))
        merged = part if self.frame is None else pd.concat([self.frame, part], ignore_index=True)
        self.frame = merged.nsmallest(self.size, "_key") if len(merged) > self.size else merged

    def rows(self) -> Any:
        import pandas as pd

        return pd.DataFrame(columns=self.columns) if self.frame is None else self.frame.drop(columns="_key")


def profiles(frame: Any, contract: Contract) -> dict[str, dict[str, list[float]]]:
    """Histograms of the drift rules' columns: the next version's baseline (GX partition objects)."""
    import numpy as np
    import pandas as pd

    result = {}
    for name, column in contract.columns.items():
        for rule in column.rules:
            if rule.drift is None or name not in frame or not pd.api.types.is_numeric_dtype(frame[name]):
                continue  # text in a numeric column fails its type rule; it is no baseline
            values = frame[name].dropna().to_numpy(dtype=float)
            if len(values) == 0 or values.min() == values.max():
                continue
            counts, edges = np.histogram(values, bins=rule.drift.bins)
            result[name] = {"bins": [float(edge) for edge in edges],
                            "weights": [float(count) / len(values) for count in counts]}
    return result


def validate_file(path: Path, contract: Contract, where: str, baseline: dict[str, dict[str, list[float]]],
                  docs_dir: Path | None = None, run_name: str = "manual") -> dict[str, Any]:
    """Validate one data file; returns the summary (rules with outcomes, status, figures, profiles).

    ``where`` names the dataset version in every error. Data Docs are written under ``docs_dir``.
    """
    import pandas as pd

    began = time.monotonic()
    columns, chunks = open_chunks(path, contract, where)
    compiled = compile_contract(contract, columns, baseline)
    runner = _Runner(compiled)
    whole = compiled.columns_in_mode("column")
    # drift columns are sampled even without a baseline: this version's profile is the next one's baseline
    drift_columns = {rule.column for rule in compiled.rules if rule.check == "drift"}
    sample = _Sample(contract.validation.sample_rows, sorted(set(compiled.columns_in_mode("sampled")) | drift_columns))
    totals: dict[str, Any] = {}
    kept: dict[str, list[Any]] = {name: [] for name in whole}
    rows = chunk_count = 0
    changes = ColumnChanges()
    for chunk in chunks:
        if chunk_count == 0:
            changes = column_changes(chunk, contract, baseline)
            for outcome in runner.run("schema", chunk):
                _merge(totals, outcome)
        chunk_count += 1
        rows += len(chunk)
        for outcome in runner.run("chunked", chunk):
            _merge(totals, outcome)
        for name in whole:
            kept[name].append(chunk[name])
        sample.add(chunk)
        del chunk
    if rows == 0:
        raise ContractError(f"{where}: the dataset has no rows (columns: {', '.join(columns) or 'none'})")
    if whole:
        for outcome in runner.run("column", pd.DataFrame({name: pd.concat(parts, ignore_index=True)
                                                         for name, parts in kept.items()})):
            _merge(totals, outcome)
        kept.clear()
    sampled = sample.rows()
    for outcome in runner.run("sampled", sampled):
        _merge(totals, outcome)
    for outcome in runner.run("table", pd.DataFrame(index=pd.RangeIndex(rows))):
        _merge(totals, outcome)
    summary = _summary(compiled, totals, rows, columns, chunk_count, len(sampled), contract, changes)
    summary["profiles"] = profiles(sampled, contract)
    summary["seconds"] = round(time.monotonic() - began, 3)
    summary["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if docs_dir is not None:
        summary["docs_index"] = str(write_data_docs(compiled, totals, summary, docs_dir, run_name))
    return summary


def _summary(compiled: CompiledContract, totals: dict[str, Any], rows: int, columns: list[str], chunks: int,
             sample_rows: int, contract: Contract, changes: ColumnChanges) -> dict[str, Any]:
    rules = [_rule_outcome(rule, totals.get(rule.id), rows, sample_rows) for rule in compiled.rules]
    _name_column_changes(rules, changes)
    failed = [rule for rule in rules if rule["success"] is False]
    status = ("failed" if any(rule["severity"] == "error" for rule in failed)
              else "warned" if failed else "passed")
    return {"status": status, "success": status == "passed", "rows": rows, "columns": columns, "chunks": chunks,
            "sample_rows": sample_rows, "contract": contract.file.name, "rules": rules, "failed": failed,
            "counts": {"rules": len(rules), "failed_error": sum(r["severity"] == "error" for r in failed),
                       "failed_warn": sum(r["severity"] == "warn" for r in failed)}}


def _name_column_changes(rules: list[dict[str, Any]], changes: ColumnChanges) -> None:
    """The columns rule says which columns are new and which gone (GX observes the whole list); a missing
    column's existence rule says what it was likely renamed to."""
    if not changes:
        return
    for rule in rules:
        if rule["success"] is not False:
            continue
        if rule["check"] == "columns":
            rule["column_changes"] = changes.as_dict()
        elif rule["check"] == "exists" and rule["column"] in changes.missing:
            rule["column_changes"] = changes.of_missing(rule["column"]).as_dict()


def _rule_outcome(rule: CompiledRule, outcome: Any, rows: int, sample_rows: int) -> dict[str, Any]:
    entry = {"rule": rule.id, "check": rule.check, "column": rule.column, "severity": rule.severity,
             "description": rule.description, "owner": rule.owner, "mode": rule.mode, "line": rule.line,
             "exact": rule.mode != "sampled" or sample_rows >= rows}
    if rule.skipped:
        return {**entry, "success": None, "skipped": rule.skipped}
    result = outcome.result or {}
    entry["success"] = bool(outcome.success)
    if outcome.exception_info and outcome.exception_info.get("raised_exception"):
        entry["success"] = False
        entry["error"] = str(outcome.exception_info.get("exception_message"))[:500]
    for key in ("observed_value", "element_count", "unexpected_count", "unexpected_percent"):
        if key in result:
            entry[key] = plain(result[key])
    if result.get("partial_unexpected_list"):
        entry["unexpected_examples"] = plain(result["partial_unexpected_list"][:PARTIAL_VALUES])
    return entry


def plain(value: Any) -> Any:
    """JSON-ready values: numpy scalars, timestamps and nested containers."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):
        return plain(value.item())
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def write_data_docs(compiled: CompiledContract, totals: dict[str, Any], summary: dict[str, Any], docs_dir: Path,
                    run_name: str) -> Path:
    """GX Data Docs for the merged result: one validation page per run and the contract's suite page."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite_name = f"{summary['contract'].removesuffix('.yaml')} contract"
    run = [rule for rule in compiled.rules if rule.expectation is not None and rule.id in totals]
    context.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=[copy.copy(rule.expectation)
                                                                           for rule in run]))
    results = [totals[rule.id] for rule in run]
    for result in results:  # numpy scalars from pandas metrics do not serialise
        result.success, result.result = bool(result.success), plain(result.result)
    passed = sum(bool(result.success) for result in results)
    merged = ExpectationSuiteValidationResult(
        success=summary["status"] == "passed", results=results, suite_name=suite_name,
        statistics={"evaluated_expectations": len(results), "successful_expectations": passed,
                    "unsuccessful_expectations": len(results) - passed,
                    "success_percent": 100.0 * passed / len(results) if results else 100.0},
        meta={"run_id": RunIdentifier(run_name=run_name), "rows": summary["rows"], "chunks": summary["chunks"]})
    key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
                                     run_id=RunIdentifier(run_name=run_name), batch_identifier="data")
    context.validation_results_store.set(key, merged)
    context.build_data_docs()
    return docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
