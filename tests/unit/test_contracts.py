"""Data contracts: every case of the malformed corpus fails with file, line, field and what is allowed, in the
loader and in ``factory lint``; the engine, on small CSV and parquet files with the real Great Expectations:
verdicts by severity, exact chunked counts, sampled rules that say so, freshness, drift against a baseline,
unreadable data named by dataset version, and Data Docs."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from operators.contracts.contract import CONTRACTS_DIR, ContractError, load_contract
from operators.contracts.engine import validate_file
from operators.contracts.validate import failure_message, observed
from operators.pipeline.cli import lint
from operators.sites import SITES_DIR

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
BASE = FIXTURES / "contracts" / "base.yaml"
CORPUS = yaml.safe_load((FIXTURES / "malformed_contracts.yaml").read_text())
WHERE = "dataset x at v9 (abc1234567) x/train.csv"
ROWS = 5500  # six chunks of the smallest chunk_rows (1000), the last one partial


# --- the malformed-contract corpus ------------------------------------------------------------------------


def materialise(case: dict[str, Any], root: Path) -> Path:
    """One corpus case as ``root/<id>.yaml``: the base with its dataset renamed to the id, then the edits."""
    path = root / f"{case['id']}.yaml"
    if "text" in case:
        text = case["text"]
    else:
        text = BASE.read_text().replace("dataset: base\n", f"dataset: {case.get('rename', case['id'])}\n")
        for old, new in case.get("edit", []):
            assert text.count(old) == 1, f"corpus case {case['id']}: {old!r} must occur once in the base contract"
            text = text.replace(old, new)
    path.write_text(text)
    return path


def shown(error: str, path: Path) -> str:
    return error.replace(str(path), "contract.yaml")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("malformed_contracts")
    for case in CORPUS:
        materialise(case, root)
    return root


def test_the_base_of_the_corpus_and_the_example_are_valid() -> None:
    contract = load_contract(BASE)
    assert contract.dataset == "base" and list(contract.columns) == ["id", "label", "score", "code", "flag",
                                                                      "taken_at"]
    assert [rule.check for rule in contract.columns["score"].rules] == ["range", "mean", "quantiles", "drift"]
    assert contract.columns["score"].rules[1].owner == "analysts@aifactory.local"
    assert contract.validation.cluster_above_bytes == 256 * 2**20
    assert contract.review.timeout_delta == timedelta(hours=24)
    assert contract.line_of("columns.code.rules.0.pattern") == 45 and contract.line_of("columns.flag.nosuch") == 47
    example = load_contract(CONTRACTS_DIR / "breast_cancer.yaml")
    assert example.dataset == "breast_cancer" and len(example.columns) == 31
    assert example.validation.cluster_above == "256M"


def test_corpus_covers_what_the_format_forbids() -> None:
    ids = {case["id"] for case in CORPUS}
    for needed in ("unknown_top_level_key", "unknown_column_key", "unknown_rule_key", "wrong_type_nullable",
                   "missing_rule_description", "missing_column_type", "missing_dataset", "wrong_api_version",
                   "wrong_kind", "unknown_severity", "two_checks_in_one_rule", "rule_without_check",
                   "range_on_str_column", "pattern_on_float_column", "max_age_on_int_column", "bad_regex",
                   "range_min_above_max", "quantile_above_one", "empty_allowed_list",
                   "allowed_values_of_the_wrong_type", "unique_false", "bad_duration", "bad_size",
                   "chunk_rows_below_1000", "dataset_not_file_name", "duplicate_key", "not_yaml", "empty_file"):
        assert needed in ids
    assert len(ids) == len(CORPUS) >= 45


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_each_malformed_contract_is_refused_with_a_teaching_message(case: dict[str, Any], tmp_path: Path) -> None:
    path = materialise(case, tmp_path)
    with pytest.raises(ContractError) as raised:
        load_contract(path)
    errors = raised.value.errors
    assert any(re.match(case["expect"], shown(error, path)) for error in errors), \
        f"expected {case['expect']!r} in {[shown(error, path) for error in errors]}"
    assert all(re.match(rf"{re.escape(str(path))}:\d+: \S+: ", error) for error in errors), errors
    assert str(raised.value) == "\n".join(errors)


def test_every_mistake_after_reading_is_listed_each_at_its_line(tmp_path: Path) -> None:
    text = BASE.read_text().replace("dataset: base\n", "dataset: several\n")
    for old, new in (("      - unique: true", "      - unique: false"), ("{min: 0, max: 100}", "{min: 100, max: 0}"),
                     ("allowed: [0, 1]", "allowed: []")):
        text = text.replace(old, new)
    path = tmp_path / "other_name.yaml"
    path.write_text(text)
    with pytest.raises(ContractError) as raised:
        load_contract(path)
    assert [shown(error, path) for error in raised.value.errors] == [
        "contract.yaml:4: dataset: 'several' must match the file name 'other_name'",
        "contract.yaml:18: columns.id.rules.0.unique: write unique: true, or leave the rule out",
        "contract.yaml:23: columns.label.rules.0.allowed: list at least one allowed value",
        "contract.yaml:29: columns.score.rules.0.range: min 100 is above max 0"]


def check_lint_report(report: dict[str, Any], corpus_dir: Path) -> None:
    assert report["ok"] is False and report["checked"]["contracts"] == len(CORPUS)
    for case in CORPUS:
        path = corpus_dir / f"{case['id']}.yaml"
        mine = [f"contract.yaml:{error['line']}: {error['field']}: {error['message']}" for error in report["errors"]
                if error["file"] == str(path)]
        assert any(re.match(case["expect"], text) for text in mine), f"{case['id']}: {case['expect']!r} not in {mine}"
    assert all(isinstance(error["line"], int) and error["field"] for error in report["errors"]), report["errors"]


def test_lint_reports_every_case_of_the_corpus(corpus_dir: Path, tmp_path: Path) -> None:
    check_lint_report(lint(tmp_path, corpus_dir, SITES_DIR), corpus_dir)  # no pipelines: only the contracts


def test_factory_lint_json_reports_every_case_of_the_corpus(corpus_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACTORY_STATE": "/var/lib/aifactory"}
    result = subprocess.run([sys.executable, "-m", "operators.pipeline", "lint", "--json", "--pipelines", str(tmp_path),
                             "--contracts", str(corpus_dir)], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    check_lint_report(json.loads(result.stdout), corpus_dir)


# --- the engine on real files -----------------------------------------------------------------------------

CONTRACT = Template("""\
apiVersion: aifactory/v1
kind: DataContract
dataset: readings
description: Sensor readings for the engine tests.
owner: data-stewards@aifactory.local
format: $format
rows:
  min: 10
  max: $rows_max
  description: Enough readings to train on.
extra_columns: $extra_columns
columns:
  id:
    type: int
    nullable: false
    rules:
      - unique: true
        description: One row per reading.
  label:
    type: int
    rules:
      - allowed: [0, 1]
        description: Two classes.
  score:
    type: float
    rules:
      - range: {min: 0, max: 100}
        description: A percentage.
      - mean: {min: 40, max: 60}
        severity: warn
        description: The average score is stable.
        owner: analysts@aifactory.local
      - quantiles:
          - {q: 0.5, min: 40, max: 60}
        severity: warn
        description: The median score is stable.
      - drift: {max_kl: 0.5, bins: 10}
        severity: warn
        description: The score distribution stays close to the last accepted version.
  code:
    type: str
    rules:
      - pattern: "[A-Z]{3}-[0-9]+"
        description: Codes look like ABC-123.
  taken_at:
    type: datetime
    rules:
      - max_age: 30d
        description: Readings are at most a month old.
validation:
  chunk_rows: $chunk_rows
  sample_rows: $sample_rows
""")
DEFAULTS = {"format": "csv", "rows_max": 100000, "extra_columns": "error", "chunk_rows": 100000,
            "sample_rows": 100000}


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory):
    """``contract(**changes)``: the readings contract, loaded from a file, with template values changed."""
    def make(**changes: Any):
        path = tmp_path_factory.mktemp("contract") / "readings.yaml"
        path.write_text(CONTRACT.substitute({**DEFAULTS, **changes}))
        return load_contract(path)
    return make


def readings(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Data that keeps the contract: scores uniform in [30, 70], readings of the last few days."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now().floor("s")
    return pd.DataFrame({"id": np.arange(rows), "label": rng.integers(0, 2, rows),
                         "score": rng.uniform(30, 70, rows).round(3), "code": [f"ABC-{i}" for i in range(rows)],
                         "taken_at": [now - pd.Timedelta(minutes=i) for i in range(rows)]})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    readings().to_csv(folder / "good.csv", index=False)
    return folder


def write(frame: pd.DataFrame, folder: Path, name: str) -> Path:
    path = folder / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path


def by_rule(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["rule"]: rule for rule in summary["rules"]}


def failed(summary: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in summary["failed"]]


@pytest.fixture(scope="module")
def passing(contract, data: Path) -> dict[str, Any]:
    return validate_file(data / "good.csv", contract(), WHERE, {})


def test_a_dataset_that_keeps_the_contract_passes(passing: dict[str, Any], contract) -> None:
    assert (passing["status"], passing["success"], passing["failed"]) == ("passed", True, [])
    assert passing["rows"] == ROWS and passing["chunks"] == 1 and passing["sample_rows"] == ROWS
    assert passing["columns"] == ["id", "label", "score", "code", "taken_at"] and passing["contract"] == "readings.yaml"
    rules = by_rule(passing)
    assert list(rules) == [
        "rows", "extra_columns", "columns.id.exists", "columns.id.type", "columns.id.nullable", "columns.id.rules.0",
        "columns.label.exists", "columns.label.type", "columns.label.rules.0", "columns.score.exists",
        "columns.score.type", "columns.score.rules.0", "columns.score.rules.1", "columns.score.rules.2",
        "columns.score.rules.3", "columns.code.exists", "columns.code.type", "columns.code.rules.0",
        "columns.taken_at.exists", "columns.taken_at.type", "columns.taken_at.rules.0"]
    assert all(rule["success"] is True for rule in rules.values() if rule["check"] != "drift")
    assert all(rule["exact"] for rule in rules.values())
    assert passing["counts"] == {"rules": 21, "failed_error": 0, "failed_warn": 0}
    assert rules["rows"]["observed_value"] == ROWS and rules["columns.label.rules.0"]["element_count"] == ROWS
    mean = rules["columns.score.rules.1"]  # each result maps back to what the steward wrote, and where
    assert (mean["check"], mean["severity"], mean["mode"]) == ("mean", "warn", "sampled")
    assert mean["owner"] == "analysts@aifactory.local"
    assert mean["line"] == contract().line_of("columns.score.rules.1") == 29 and 45 < mean["observed_value"] < 55
    assert rules["columns.code.rules.0"]["description"] == "Codes look like ABC-123."
    assert rules["columns.code.rules.0"]["owner"] == "data-stewards@aifactory.local"  # the contract's owner
    histogram = passing["profiles"]["score"]  # the next version's drift baseline
    assert len(histogram["bins"]) == 11 and abs(sum(histogram["weights"]) - 1) < 1e-9
    assert 30 <= histogram["bins"][0] < histogram["bins"][-1] <= 70
    json.dumps(passing)  # the summary goes to S3 as summary.json


def test_warn_rules_warn_and_error_rules_fail(contract, data: Path) -> None:
    shifted = readings().assign(score=lambda frame: frame["score"] + 25)  # within range; mean and median shift
    warned = validate_file(write(shifted, data, "shifted.csv"), contract(), WHERE, {})
    assert (warned["status"], warned["success"]) == ("warned", False)
    assert failed(warned) == ["columns.score.rules.1", "columns.score.rules.2"]
    assert warned["counts"] == {"rules": 21, "failed_error": 0, "failed_warn": 2}
    broken = shifted.assign(label=lambda frame: frame["label"].where(frame.index != 7, 5))
    errors = validate_file(write(broken, data, "broken.csv"), contract(), WHERE, {})
    assert errors["status"] == "failed" and errors["counts"] == {"rules": 21, "failed_error": 1, "failed_warn": 2}
    assert failed(errors) == ["columns.label.rules.0", "columns.score.rules.1", "columns.score.rules.2"]
    assert by_rule(errors)["columns.label.rules.0"]["unexpected_examples"] == [5]


def bad_readings() -> pd.DataFrame:
    """Row-wise breaches spread over the six chunks of 1000 rows, and a duplicate id across chunks 0 and 5."""
    frame = readings()
    frame["id"] = frame["id"].astype(float)
    frame.loc[[10, 4000, 5499], "score"] = [150.0, -1.0, 101.0]
    frame.loc[[999, 1000, 2500], "code"] = ["bad", "ABC-", "abc-1"]
    frame.loc[[1200, 3300], "label"] = [7, 2]
    frame.loc[3100, "id"] = np.nan
    frame.loc[5200, "id"] = 3.0
    return frame


def test_chunked_validation_gives_the_counts_and_status_of_one_chunk(contract, data: Path) -> None:
    path = write(bad_readings(), data, "bad.csv")
    whole = validate_file(path, contract(), WHERE, {})
    chunked = validate_file(path, contract(chunk_rows=1000), WHERE, {})
    assert (whole["chunks"], chunked["chunks"]) == (1, 6)
    assert whole["status"] == chunked["status"] == "failed"
    assert failed(whole) == failed(chunked) == ["columns.id.nullable", "columns.id.rules.0", "columns.label.rules.0",
                                                "columns.score.rules.0", "columns.code.rules.0"]
    for rule in whole["rules"]:
        other = by_rule(chunked)[rule["rule"]]
        for key in ("success", "element_count", "unexpected_count", "observed_value"):
            if rule["mode"] != "sampled":
                assert rule.get(key) == other.get(key), (rule["rule"], key, rule.get(key), other.get(key))
        if "unexpected_count" in rule and rule["element_count"]:
            assert other["unexpected_percent"] == pytest.approx(rule["unexpected_percent"])
    counts = {rule["rule"]: rule["unexpected_count"] for rule in chunked["failed"]}
    assert counts == {"columns.id.nullable": 1, "columns.id.rules.0": 2, "columns.label.rules.0": 2,
                      "columns.score.rules.0": 3, "columns.code.rules.0": 3}
    chunked_rules = by_rule(chunked)
    assert sorted(chunked_rules["columns.score.rules.0"]["unexpected_examples"]) == [-1.0, 101.0, 150.0]
    assert sorted(chunked_rules["columns.code.rules.0"]["unexpected_examples"]) == ["ABC-", "abc-1", "bad"]
    assert chunked_rules["columns.id.rules.0"]["element_count"] == ROWS


def test_unique_catches_a_duplicate_that_spans_two_chunks(contract, data: Path) -> None:
    frame = readings()
    frame.loc[4321, "id"] = 17  # chunk 4 repeats an id of chunk 0
    summary = validate_file(write(frame, data, "duplicate.csv"), contract(chunk_rows=1000), WHERE, {})
    assert summary["chunks"] == 6 and summary["status"] == "failed" and failed(summary) == ["columns.id.rules.0"]
    unique = by_rule(summary)["columns.id.rules.0"]
    assert (unique["unexpected_count"], unique["unexpected_examples"], unique["exact"]) == (2, [17, 17], True)


def test_sampled_rules_say_whether_they_saw_every_row(contract, data: Path, passing: dict[str, Any]) -> None:
    sampled = validate_file(data / "good.csv", contract(sample_rows=1000), WHERE, {})
    assert sampled["sample_rows"] == 1000 and sampled["rows"] == ROWS and sampled["status"] == "passed"
    exactness = {rule["rule"]: rule["exact"] for rule in sampled["rules"]}
    assert [rule for rule, exact in exactness.items() if not exact] == [
        "columns.score.rules.1", "columns.score.rules.2", "columns.score.rules.3"]  # mean, quantiles, drift
    mean = by_rule(sampled)["columns.score.rules.1"]["observed_value"]
    assert mean != by_rule(passing)["columns.score.rules.1"]["observed_value"] and 45 < mean < 55  # a true sample
    assert all(rule["exact"] for rule in passing["rules"])  # 5500 rows fit the default sample of 100000


def test_freshness_passes_on_recent_data_and_fails_on_stale_data(contract, data: Path, passing: dict[str, Any]) -> None:
    fresh = by_rule(passing)["columns.taken_at.rules.0"]
    assert fresh["success"] is True and fresh["mode"] == "column"
    assert pd.Timestamp(fresh["observed_value"]) > pd.Timestamp.now() - pd.Timedelta(days=1)
    stale = readings().assign(taken_at=lambda frame: frame["taken_at"] - pd.Timedelta(days=31))
    summary = validate_file(write(stale, data, "stale.csv"), contract(), WHERE, {})
    assert summary["status"] == "failed" and failed(summary) == ["columns.taken_at.rules.0"]
    observed = pd.Timestamp(by_rule(summary)["columns.taken_at.rules.0"]["observed_value"])
    assert pd.Timedelta(days=31) <= pd.Timestamp.now() - observed < pd.Timedelta(days=32)


def test_drift_against_the_last_accepted_version(contract, data: Path, passing: dict[str, Any]) -> None:
    skipped = by_rule(passing)["columns.score.rules.3"]  # the first version: nothing to compare with
    assert skipped["success"] is None and "no earlier accepted version" in skipped["skipped"]
    assert skipped not in passing["failed"] and passing["status"] == "passed"
    baseline = passing["profiles"]
    same = validate_file(data / "good.csv", contract(), WHERE, baseline)
    drift = by_rule(same)["columns.score.rules.3"]
    assert same["status"] == "passed" and drift["success"] is True and drift["observed_value"] < 0.01
    resampled = validate_file(write(readings(seed=1), data, "resampled.csv"), contract(), WHERE, baseline)
    assert resampled["status"] == "passed" and by_rule(resampled)["columns.score.rules.3"]["observed_value"] < 0.5
    narrow = readings(seed=2)  # same mean and median, but all in the two middle bins of ten: KL ~ ln 5
    narrow["score"] = np.random.default_rng(2).uniform(46.5, 53.5, ROWS).round(3)
    summary = validate_file(write(narrow, data, "narrow.csv"), contract(), WHERE, baseline)
    drift = by_rule(summary)["columns.score.rules.3"]
    assert drift["success"] is False and drift["observed_value"] > 1 and drift["severity"] == "warn"
    assert summary["status"] == "warned" and failed(summary) == ["columns.score.rules.3"]
    assert summary["profiles"]["score"]["bins"][0] >= 46.5  # the baseline the next version would get


def test_a_drift_rule_alone_still_profiles_its_column_for_the_next_version(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "drift_only.yaml"
    path.write_text("apiVersion: aifactory/v1\nkind: DataContract\ndataset: drift_only\ndescription: Drift only.\n"
                    "owner: data-stewards@aifactory.local\nextra_columns: allow\ncolumns:\n  score:\n    type: float\n"
                    "    rules: [{drift: {max_kl: 0.5, bins: 4}, severity: warn, description: Stable.}]\n")
    first = validate_file(data / "good.csv", load_contract(path), WHERE, {})
    assert first["status"] == "passed" and by_rule(first)["columns.score.rules.0"]["success"] is None
    assert len(first["profiles"]["score"]["bins"]) == 5  # the baseline the next version is compared with
    second = validate_file(data / "good.csv", load_contract(path), WHERE, first["profiles"])
    assert by_rule(second)["columns.score.rules.0"]["success"] is True


def test_pattern_allowed_and_row_count_rules(contract, data: Path) -> None:
    frame = readings()
    frame.loc[[3, 4], "code"] = ["ABC-12x", "AB-1"]
    frame.loc[5, "label"] = 3
    summary = validate_file(write(frame, data, "values.csv"), contract(), WHERE, {})
    rules = by_rule(summary)
    assert failed(summary) == ["columns.label.rules.0", "columns.code.rules.0"]
    assert rules["columns.code.rules.0"]["unexpected_examples"] == ["ABC-12x", "AB-1"]
    assert rules["columns.label.rules.0"]["unexpected_examples"] == [3]
    few = validate_file(write(readings(rows=9), data, "few.csv"), contract(), WHERE, {})
    assert failed(few) == ["rows"] and by_rule(few)["rows"]["observed_value"] == 9 and few["status"] == "failed"
    many = validate_file(data / "good.csv", contract(rows_max=5000), WHERE, {})
    assert failed(many) == ["rows"] and by_rule(many)["rows"]["observed_value"] == ROWS


def test_parquet_is_read_in_batches_of_chunk_rows(contract, data: Path) -> None:
    frame = readings()
    frame["taken_at"] = frame["taken_at"].dt.tz_localize("Europe/Paris")  # time zones become naive UTC
    path = write(frame, data, "good.parquet")
    summary = validate_file(path, contract(format="parquet", chunk_rows=1000), WHERE, {})
    assert summary["status"] == "passed" and summary["chunks"] == 6 and summary["rows"] == ROWS
    assert by_rule(summary)["columns.taken_at.type"]["success"] is True
    frame.loc[2222, "score"] = 200.0
    frame.loc[4444, "id"] = 0
    broken = validate_file(write(frame, data, "broken.parquet"), contract(format="parquet", chunk_rows=1000), WHERE, {})
    assert failed(broken) == ["columns.id.rules.0", "columns.score.rules.0"]
    assert by_rule(broken)["columns.score.rules.0"]["unexpected_examples"] == [200.0]


def test_gaps_and_empty_chunks_read_the_same_in_any_chunking(contract, data: Path) -> None:
    """A nullable int column with gaps (read as float) and a text column empty for a whole chunk (read as
    float) keep their types, whatever the chunk size."""
    frame = readings()
    frame["label"] = frame["label"].astype("Int64")
    frame.loc[[10, 4000], "label"] = pd.NA
    frame.loc[2000:2999, "code"] = None
    path = write(frame, data, "gaps.csv")
    for chunk_rows in (100000, 1000):
        summary = validate_file(path, contract(chunk_rows=chunk_rows), WHERE, {})
        assert summary["status"] == "passed", (chunk_rows, summary["failed"])
        assert by_rule(summary)["columns.label.rules.0"]["element_count"] == ROWS
    parquet = validate_file(write(frame, data, "gaps.parquet"), contract(format="parquet", chunk_rows=1000), WHERE, {})
    assert parquet["status"] == "passed", parquet["failed"]


# --- data the contract cannot be checked against -----------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "file_format", "expected"), [
    ("missing.csv", None, "csv", "the data file is missing"),
    ("empty.csv", b"", "csv", "the data file is empty (0 bytes)"),
    ("train.csv", b"id,label\n1,0\n", "parquet", "cannot be read as parquet (the contract's format)"),
    ("train.parquet", "parquet", "csv", "cannot be read as CSV (the contract's format)"),
    ("header.csv", b"id,label,score,code,taken_at\n", "csv", "the dataset has no rows (columns: id, label, score, "
                                                             "code, taken_at)"),
], ids=["missing", "zero_bytes", "csv_for_parquet", "parquet_for_csv", "header_only"])
def test_unreadable_data_names_the_dataset_version(contract, tmp_path: Path, name: str, content: Any,
                                                   file_format: str, expected: str) -> None:
    path = tmp_path / name
    if content == "parquet":
        readings(rows=20).to_parquet(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ContractError) as raised:
        validate_file(path, contract(format=file_format), WHERE, {})
    assert str(raised.value).startswith(f"{WHERE}: {expected}"), str(raised.value)


def test_a_missing_column_fails_its_existence_rule(contract, data: Path) -> None:
    summary = validate_file(write(readings().drop(columns="code"), data, "no_code.csv"), contract(), WHERE, {})
    rules = by_rule(summary)
    assert summary["status"] == "failed"
    exists = rules["columns.code.exists"]
    assert (exists["success"], exists["severity"], exists["check"]) == (False, "error", "exists")
    assert "columns.code.type" not in rules and "columns.code.rules.0" not in rules  # nothing to check them on
    assert failed(summary) == ["extra_columns", "columns.code.exists"]  # the column set differs too


def test_a_renamed_column_is_named_as_missing_unexpected_and_likely_renamed(contract, data: Path) -> None:
    """Not ``observed [all column names]``: the steward reads which column went, which came, and why the two
    are likely one (the new one's values fit the old one's rules)."""
    renamed = readings().rename(columns={"score": "score_pct"})
    summary = validate_file(write(renamed, data, "renamed.csv"), contract(), WHERE, {})
    rules = by_rule(summary)
    assert rules["extra_columns"]["column_changes"] == {
        "unexpected_columns": ["score_pct"], "missing_columns": ["score"], "likely_renames": {"score": "score_pct"}}
    assert observed(rules["extra_columns"]) == ("unexpected column(s) 'score_pct'; missing column(s) 'score'; "
                                                "likely renamed: 'score' -> 'score_pct' (its values fit the "
                                                "contract's rules for 'score')")
    assert observed(rules["columns.score.exists"]).startswith("missing column(s) 'score'; likely renamed: 'score'")
    message = failure_message(summary, "error")
    assert "id" not in message.split("observed ")[1].split(";")[0]  # not the whole column list


def test_a_rename_is_proposed_only_where_the_values_fit_the_old_column(contract, data: Path) -> None:
    """Two columns gone, two new: each new one is matched to the old one its values fit, whatever its name;
    a new column whose values fit no rule of a missing one is only unexpected."""
    frame = readings().rename(columns={"score": "a", "label": "b"})
    summary = validate_file(write(frame, data, "two_renamed.csv"), contract(), WHERE, {})
    changes = by_rule(summary)["extra_columns"]["column_changes"]
    # b holds 0/1 (fits label's allowed values, and score's range too); a holds 30..70 (fits score, not label)
    assert changes["likely_renames"] == {"label": "b", "score": "a"}
    unrelated = readings().drop(columns="score").assign(notes="free text")
    changes = by_rule(validate_file(write(unrelated, data, "unrelated.csv"), contract(), WHERE, {}))[
        "extra_columns"]["column_changes"]
    assert changes == {"unexpected_columns": ["notes"], "missing_columns": ["score"], "likely_renames": {}}


def test_a_rename_prefers_the_column_closest_to_the_old_one_s_last_accepted_distribution(
        contract, data: Path, passing: dict[str, Any]) -> None:
    baseline = passing["profiles"]
    frame = readings().drop(columns="score").assign(low=np.linspace(0, 9, ROWS), near=readings(seed=3)["score"])
    changes = by_rule(validate_file(write(frame, data, "two_candidates.csv"), contract(), WHERE, baseline))[
        "extra_columns"]["column_changes"]
    assert changes["likely_renames"] == {"score": "near"}  # "low" is in score's range, not in its histogram's


@pytest.mark.parametrize(("policy", "status"), [("error", "failed"), ("warn", "warned"), ("allow", "passed")])
def test_an_extra_column_meets_the_contract_s_extra_columns_policy(contract, data: Path, policy: str,
                                                                   status: str) -> None:
    path = data / "extra.csv"
    if not path.exists():
        write(readings().assign(operator="alice"), data, "extra.csv")
    summary = validate_file(path, contract(extra_columns=policy), WHERE, {})
    assert summary["status"] == status
    if policy == "allow":
        assert "extra_columns" not in by_rule(summary)
    else:
        assert summary["failed"] == [by_rule(summary)["extra_columns"]]
        assert summary["failed"][0]["severity"] == policy and "operator" in summary["failed"][0]["observed_value"]


def test_text_in_a_float_column_fails_its_type_rule(contract, data: Path) -> None:
    frame = readings()
    frame["score"] = frame["score"].astype(object)
    frame.loc[100, "score"] = "high"
    summary = validate_file(write(frame, data, "text_score.csv"), contract(), WHERE, {})
    rules = by_rule(summary)
    assert rules["columns.score.type"]["success"] is False and rules["columns.score.type"]["severity"] == "error"
    assert summary["status"] == "failed" and "columns.score.type" in failed(summary)
    assert "score" not in summary["profiles"]  # no baseline from a column that is not numbers
    assert rules["columns.code.type"]["success"] is True and rules["columns.id.rules.0"]["success"] is True


# --- Data Docs -------------------------------------------------------------------------------------------


def test_data_docs_show_the_rule_results(contract, data: Path, tmp_path: Path) -> None:
    frame = readings()
    frame.loc[3, "code"] = "nope"
    summary = validate_file(write(frame, data, "docs.csv"), contract(), WHERE, {}, docs_dir=tmp_path / "docs",
                            run_name="run-42")
    index = Path(summary["docs_index"])
    assert index.is_file() and index.name == "index.html" and index.is_relative_to(tmp_path / "docs")
    assert "readings contract" in index.read_text()
    (page,) = (index.parent / "validations").rglob("*.html")
    assert "run-42" in page.parts
    text = words(page.read_text())
    assert "Status: Failed Statistics Evaluated Expectations 20 Successful Expectations 19 Unsuccessful " \
           "Expectations 1" in text  # the merged result; the skipped drift rule is not an expectation run
    assert "values must match this regular expression: ^(?:[A-Z]{3}-[0-9]+)$ . 1 unexpected values found." in text
    assert "Sampled Unexpected Values nope" in text and "Must have exactly these columns" in text
    assert "Run Name run-42" in text and "mean must be greater than or equal to 40.0" in text
    suite = words((index.parent / "expectations" / "readings contract.html").read_text())
    assert "Codes look like ABC-123." in suite  # the steward's description of the rule


def words(page: str) -> str:
    """An HTML page's visible text, one space between words."""
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_a_failure_reads_as_lines_rule_and_contract_line_then_observed_and_examples() -> None:
    """What the task log shows for a broken contract: one rule per block, no single 2,000-character line."""
    from operators.contracts.validate import failure_explanation

    summary = {"failed": [
        {"rule": "columns.mean_radius.rules.0", "line": 23, "severity": "error", "description": "A length.",
         "unexpected_count": 5, "element_count": 455, "unexpected_examples": [-1.5, -2.0, -3.0, -4.0, -5.0, -6.0]},
        {"rule": "rows", "line": 8, "severity": "error", "description": "Enough rows.", "observed_value": 3},
        {"rule": "columns.x.rules.1", "line": 30, "severity": "warn", "description": "Drift.", "observed_value": 1},
    ]}
    assert failure_explanation(summary, "error") == [
        "  columns.mean_radius.rules.0 (contract line 23): A length.",
        "      observed: 5 of 455 rows break it",
        "      examples: -1.5, -2.0, -3.0, -4.0, -5.0",
        "  rows (contract line 8): Enough rows.",
        "      observed: 3"]
    assert failure_explanation(summary, "warn")[0] == "  columns.x.rules.1 (contract line 30): Drift."
