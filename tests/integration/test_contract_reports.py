"""validate_pinned against the real S3: bad data is recorded as such (never as a success), reports and
history land per dataset version and run, and drift compares with the last accepted version."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path

import boto3
import pandas as pd
import pytest

from operators.contracts.contract import load_contract
from operators.contracts.validate import baseline, history, record_decision, validate_pinned

CONTRACT = """apiVersion: aifactory/v1
kind: DataContract
dataset: {name}
description: A small measurement table for report tests.
owner: stewards@example.org
rows: {{min: 10, description: Enough rows to learn from.}}
columns:
  id: {{type: int, nullable: false, rules: [{{unique: true, description: One row per sample.}}]}}
  value:
    type: float
    nullable: false
    rules:
      - range: {{min: 0, max: 100}}
        description: Physical bounds of the sensor.
      - drift: {{max_kl: 0.3, bins: 5}}
        severity: warn
        description: Stays close to the last accepted release.
"""


@pytest.fixture(scope="module")
def s3(stack_info):
    config = stack_info["s3"]
    return boto3.client("s3", endpoint_url=config["endpoint_url"], aws_access_key_id=config["access_key"],
                        aws_secret_access_key=config["secret_key"], region_name="us-east-1")


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[str, Path]:
    name = f"reports_test_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONTRACT.format(name=name))
    return name, path


def put(s3, name: str, revision: str, body: bytes, earlier: tuple[str, ...] = ()) -> dict:
    """A pinned dataset version whose data file is ``body`` in the datasets bucket; ``earlier``: the
    versions on its history, as pin_dataset finds them in the registry."""
    key = f"tests/{name}/{revision}/data.csv"
    s3.put_object(Bucket="datasets", Key=key, Body=body)
    return {"name": name, "repository": "file:///registry.git", "revision": revision, "commit": "c0ffee" * 6 + "abcd",
            "earlier": list(earlier),
            "data": {"path": f"{name}/data.csv", "md5": hashlib.md5(body).hexdigest(), "size": len(body),
                     "url": f"s3://datasets/{key}"}}


def frame_bytes(values: list[float], **extra: list) -> bytes:
    buffer = io.StringIO()
    pd.DataFrame({"id": range(len(values)), "value": values, **extra}).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def run(s3, pinned: dict, contract: Path, run_id: str) -> dict:
    return validate_pinned(pinned, load_contract(contract), s3, "reports", dag_id="test_dag", run_id=run_id)


def stored_summary(s3, summary: dict) -> dict:
    return json.loads(s3.get_object(Bucket="reports", Key=f"{summary['report']['prefix']}/summary.json")["Body"].read())


@pytest.mark.parametrize(("body", "expected"), [
    (None, "is missing from the store"),
    (b"", "the data file is empty (0 bytes)"),
    (b"id,value\n", "the dataset has no rows"),
    (b"\x00\xff\xfe binary \x00", "cannot be read as CSV"),
])
def test_unreadable_data_is_recorded_as_unreadable_naming_the_version(s3, dataset, body, expected):
    name, contract = dataset
    pinned = put(s3, name, "v1", b"placeholder" if body is None else body)
    if body is None:
        s3.delete_object(Bucket="datasets", Key=pinned["data"]["url"].removeprefix("s3://datasets/"))
    summary = run(s3, pinned, contract, "run-bad")
    assert summary["status"] == "unreadable" and summary["success"] is False
    assert expected in summary["error"]
    assert f"dataset {name} at v1 (c0ffeec0ff) {name}/data.csv" in summary["error"]
    assert stored_summary(s3, summary)["status"] == "unreadable"
    assert summary["report"]["index"].endswith("summary.json"), "no Data Docs for data that was not read"


def test_a_changed_file_is_refused_by_its_md5(s3, dataset):
    name, contract = dataset
    pinned = put(s3, name, "v1", frame_bytes([1.0] * 20))
    pinned["data"]["md5"] = "0" * 32
    summary = run(s3, pinned, contract, "run-md5")
    assert summary["status"] == "unreadable" and "is not the pinned 000000" in summary["error"]


def test_schema_breaks_fail_naming_the_rule(s3, dataset):
    name, contract = dataset
    wrong_types = put(s3, name, "v1", frame_bytes(["high"] * 20))
    summary = run(s3, wrong_types, contract, "run-types")
    assert summary["status"] == "failed"
    assert "columns.value.type" in {rule["rule"] for rule in summary["failed"]}
    extra = put(s3, name, "v2", frame_bytes([1.0] * 20, note=["x"] * 20))
    summary = run(s3, extra, contract, "run-extra")
    assert [rule["rule"] for rule in summary["failed"]] == ["extra_columns"]
    assert summary["failed"][0]["column_changes"]["unexpected_columns"] == ["note"]  # the new one, not the list
    missing = put(s3, name, "v3", b"id\n" + b"\n".join(str(i).encode() for i in range(20)) + b"\n")
    summary = run(s3, missing, contract, "run-missing")
    assert summary["status"] == "failed"
    assert {"columns.value.exists", "extra_columns"} <= {rule["rule"] for rule in summary["failed"]}


def test_history_baseline_and_drift_against_the_last_accepted_version(s3, dataset):
    name, contract = dataset
    steady = [10.0 + (i % 50) for i in range(500)]
    first = run(s3, put(s3, name, "v1", frame_bytes(steady)), contract, "run-1")
    assert first["status"] == "passed" and first["baseline"] is None
    drift = next(rule for rule in first["rules"] if rule["check"] == "drift")
    assert drift["success"] is None and "no earlier accepted version" in drift["skipped"]
    assert s3.head_object(Bucket="reports", Key=f"validation/{name}/v1/run-1/index.html")

    shifted = run(s3, put(s3, name, "v2", frame_bytes([value + 40 for value in steady]), ("v1",)), contract, "run-2")
    assert shifted["baseline"] == {"revision": "v1", "run_id": "run-1"}
    assert shifted["status"] == "warned"
    assert [rule["rule"] for rule in shifted["failed"]] == ["columns.value.rules.1"]

    prefix = shifted["report"]["prefix"]
    record_decision(s3, "reports", prefix, {"decision": "reject", "by": "steward", "at": "2026-01-01T00:00:00Z"})
    runs = history(s3, "reports", name)
    assert [entry["run_id"] for entry in runs] == ["run-2", "run-1"]
    assert runs[0]["decision"]["decision"] == "reject"
    assert baseline(s3, "reports", name, ["v1", "v2"])[1] == {"revision": "v1", "run_id": "run-1"}, \
        "a rejected version is no baseline"
    assert baseline(s3, "reports", name, [])[1] is None, "a later version is no baseline for an earlier one"
    record_decision(s3, "reports", prefix, {"decision": "approve", "by": "steward", "at": "2026-01-01T00:01:00Z"})
    assert baseline(s3, "reports", name, ["v1", "v2"])[1] == {"revision": "v2", "run_id": "run-2"}


def test_a_report_renders_offline_with_its_tables_styles_and_navigation(s3, dataset, offline_browser, stack_info):
    """HPC sites are often without Internet: the report's pages load every style, script and font from the
    stack's own origin; with all other requests blocked, the index lists the run, the validation page
    shows its results table styled by Bootstrap, and the navigation works. Screenshots are checked."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.integration.browser import requests_made

    name, contract = dataset
    summary = run(s3, put(s3, name, "v1", frame_bytes([float(v % 90) for v in range(40)])), contract, "offline")
    base = stack_info["airflow"]["url"].rstrip("/")
    browser, wait = offline_browser, WebDriverWait(offline_browser, 30)
    requests_made(browser)  # the login's requests are not the report's
    browser.get(f"{base}/factory/reports/{summary['report']['index']}")
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table tbody tr td a, table tbody tr[data-href]"))
    index_shot = screenshot(browser, "report-index")
    link[0].click()
    results = wait.until(lambda d: [row for row in d.find_elements(By.CSS_SELECTOR, "table tbody tr")
                                    if "values must be" in row.text or "must be" in row.text])
    page_shot = screenshot(browser, "report-validation")
    style = browser.execute_script(
        "const nav = document.querySelector('nav');"
        "return [getComputedStyle(document.body).fontFamily, typeof jQuery, typeof jQuery.fn.bootstrapTable,"
        "        typeof jQuery.fn.tooltip, nav && nav.querySelectorAll('a').length];")
    assert "apple-system" in style[0] or "Roboto" in style[0], f"Bootstrap's styles missing: {style}"
    assert style[1:4] == ["function", "function", "function"], style  # jQuery, bootstrap-table, Bootstrap's JS
    assert style[4], f"no navigation links: {style}"
    assert results, "no validation result rows"
    made = requests_made(browser)
    outside = [url for url, _ in made if not url.startswith((base, "data:", "blob:", "about:"))]
    failed = [(url, error) for url, error in made if error and url.startswith(base)]
    assert not outside, f"the report asked outside the stack: {outside}"
    assert not failed, f"requests to the stack failed: {failed}"
    assert any("/factory/assets/bootstrap/dist/css/bootstrap.min.css" in url for url, _ in made), made
    for shot in (index_shot, page_shot):
        colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, f"{shot} is nearly blank ({len(colours)} colours)"


def screenshot(browser, name: str) -> Path:
    """A PNG under the stack's logs (the test's evidence; CI keeps the logs folder)."""
    import os

    folder = Path(os.environ.get("FACTORY_STATE", "/var/lib/aifactory")) / "logs" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert browser.save_screenshot(str(path)), path
    return path
