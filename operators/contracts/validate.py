"""Validate a pinned dataset version against its contract and publish the report: the one entry point
the Airflow worker and the Slurm validation job (``python -m operators.contracts.job``) both call.

Reports live in S3 under ``validation/<dataset>/<revision>/<run>/``: GX Data Docs, ``summary.json``
and, once a steward answered, ``decision.json``. A run that could not read its data is recorded too,
as ``unreadable``, never as a success. Imports boto3/pandas/GX lazily.
"""

from __future__ import annotations

import json
import mimetypes
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from operators.connections import VALIDATION_PREFIX
from operators.contracts.column_changes import describe as describe_column_changes
from operators.contracts.contract import Contract, ContractError, load_contract

PREFIX = VALIDATION_PREFIX
ACCEPTED = {"passed", "approved"}


def run_prefix(dataset: str, revision: str, run_id: str) -> str:
    return f"{PREFIX}/{dataset}/{revision}/{run_id}"


def dataset_version(pinned: dict[str, Any]) -> str:
    """How errors and reports name the data: dataset, revision, commit and file."""
    return f"dataset {pinned['name']} at {pinned['revision']} ({pinned['commit'][:10]}) {pinned['data']['path']}"


def publish(local_dir: Path, s3_client, bucket: str, prefix: str) -> list[str]:
    """Upload a folder of HTML reports to S3 with content types, so a browser renders them."""
    keys = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(local_dir)}"
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3_client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        keys.append(key)
    return keys


def put_json(s3_client, bucket: str, key: str, value: Any) -> None:
    s3_client.put_object(Bucket=bucket, Key=key, Body=json.dumps(value, indent=2, default=str).encode(),
                         ContentType="application/json")


def get_json(s3_client, bucket: str, key: str) -> Any:
    return json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def _run_folders(s3_client, bucket: str, dataset: str | None) -> list[tuple[str, bool]]:
    """Report folders (``validation/<dataset>/<revision>/<run>``) newest first, each with whether a
    steward's decision is there; one listing, no object read."""
    prefix = f"{PREFIX}/{dataset}/" if dataset else f"{PREFIX}/"
    found: dict[str, dict[str, Any]] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            folder, _, name = item["Key"].rpartition("/")
            if name in ("summary.json", "decision.json"):
                found.setdefault(folder, {})[name] = item
    runs = sorted(((folder, files) for folder, files in found.items() if "summary.json" in files),
                  key=lambda entry: entry[1]["summary.json"]["LastModified"], reverse=True)
    return [(folder, "decision.json" in files) for folder, files in runs]


def _load_run(s3_client, bucket: str, folder: str, decided: bool) -> dict[str, Any] | None:
    """A run's summary with its ``decision`` (or None); None for reports from before the contract format."""
    summary = get_json(s3_client, bucket, f"{folder}/summary.json")
    if not {"status", "run_id", "dag_id"} <= set(summary):
        return None
    summary["decision"] = get_json(s3_client, bucket, f"{folder}/decision.json") if decided else None
    summary["prefix"] = folder
    return summary


def history(s3_client, bucket: str, dataset: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Validation runs, newest first, each a summary with its ``decision`` (or None). S3 keeps modification
    times to the second, so runs are ordered by their own ``validated_at``."""
    runs = (_load_run(s3_client, bucket, folder, decided)
            for folder, decided in _run_folders(s3_client, bucket, dataset)[:limit])
    return sorted((summary for summary in runs if summary is not None), key=lambda summary: summary["validated_at"],
                  reverse=True)


def outcome(summary: dict[str, Any]) -> str:
    """passed, failed, unreadable, warned (awaiting a steward), approved or rejected."""
    decision = summary.get("decision")
    if summary["status"] == "warned" and decision:
        return "approved" if decision["decision"] == "approve" else "rejected"
    return summary["status"]


def baseline(s3_client, bucket: str, dataset: str, earlier: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The drift baseline: histograms of the newest accepted run of an earlier version of the dataset
    (``earlier``: the registry's tags on the version's history), so a later or rejected release never is."""
    candidates = (_load_run(s3_client, bucket, folder, decided)  # only earlier versions' summaries are read
                  for folder, decided in _run_folders(s3_client, bucket, dataset) if folder.split("/")[2] in earlier)
    accepted = [summary for summary in candidates
                if summary and outcome(summary) in ACCEPTED and summary.get("profiles")]
    if not accepted:
        return {}, None
    newest = max(accepted, key=lambda summary: summary["validated_at"])
    return newest["profiles"], {"revision": newest["revision"], "run_id": newest["run_id"]}


def record_decision(s3_client, bucket: str, prefix: str, decision: dict[str, Any]) -> None:
    put_json(s3_client, bucket, f"{prefix}/decision.json", decision)


def validated_object(pinned: dict[str, Any]) -> dict[str, Any]:
    """What validation reads of the pinned data: the file, or a sharded folder's manifest (never its shards)."""
    return pinned["data"].get("manifest") or pinned["data"]


def _download(s3_client, pinned: dict[str, Any], contract: Contract, target: Path, where: str) -> None:
    from botocore.exceptions import ClientError

    from operators.units import md5_of

    sharded = "shards" in pinned["data"]
    if sharded != (contract.format == "shards"):
        raise ContractError(f"{where}: the data is {'a sharded folder' if sharded else 'a single file'}, but the "
                            f"contract's format is {contract.format} (use {'shards' if sharded else 'csv or parquet'})")
    if sharded and "manifest" not in pinned["data"]:
        raise ContractError(f"{where}: the sharded folder has no manifest.json (pack with operators.datasets.shards)")
    source = validated_object(pinned)
    url = urlparse(source["url"])
    try:
        s3_client.download_file(url.netloc, url.path.lstrip("/"), str(target))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        missing = code in ("404", "NoSuchKey", "NotFound")
        raise ContractError(f"{where}: the data file {source['url']} is "
                            f"{'missing from the store' if missing else f'unreadable ({code})'}") from None
    actual = md5_of(target)
    if actual != source["md5"]:
        raise ContractError(f"{where}: the data file's md5 {actual} is not the pinned {source['md5']}")


def validate_pinned(pinned: dict[str, Any], contract: Contract | Path, s3_client, bucket: str, *, dag_id: str,
                    run_id: str, where_run: str = "airflow worker") -> dict[str, Any]:
    """Fetch the pinned file, validate it, publish Data Docs and ``summary.json``; returns the summary.

    Unreadable data (missing, wrong format, empty) gives status ``unreadable`` with the reason.
    """
    from operators.contracts.engine import validate_file

    if isinstance(contract, Path):
        contract = load_contract(contract)
    where = dataset_version(pinned)
    prefix = run_prefix(pinned["name"], pinned["revision"], run_id)
    began = time.monotonic()
    profiles, previous = baseline(s3_client, bucket, pinned["name"], pinned.get("earlier", []))
    identity = {"dataset": pinned["name"], "repository": pinned["repository"], "revision": pinned["revision"],
                "commit": pinned["commit"], "path": pinned["data"]["path"], "md5": pinned["data"]["md5"],
                "bytes": pinned["data"].get("size"), "contract": contract.file.name, "dag_id": dag_id,
                "run_id": run_id, "validated_on": where_run, "baseline": previous,
                "validated_at": datetime.now(UTC).isoformat(timespec="microseconds")}
    with tempfile.TemporaryDirectory(prefix="contract-") as tmp:
        data = Path(tmp) / Path(pinned["data"]["path"]).name
        try:
            _download(s3_client, pinned, contract, data, where)
            summary = validate_file(data, contract, where, profiles, Path(tmp) / "docs", run_id)
        except ContractError as error:
            summary = {"status": "unreadable", "success": False, "error": str(error), "rules": [], "failed": [],
                       "contract": contract.file.name}
        summary.update(identity)
        summary["seconds_total"] = round(time.monotonic() - began, 3)
        site = Path(tmp) / "docs" / "gx" / "uncommitted" / "data_docs" / "local_site"
        summary.pop("docs_index", None)
        index = f"{prefix}/index.html" if site.is_dir() else f"{prefix}/summary.json"
        summary["report"] = {"bucket": bucket, "prefix": prefix, "index": index}
        if site.is_dir():
            publish(site, s3_client, bucket, prefix)
    put_json(s3_client, bucket, f"{prefix}/summary.json", summary)
    return summary


def observed(rule: dict[str, Any]) -> str:
    """What a broken rule saw: GX's error, the observed value, or how many rows broke it, with examples."""
    if rule.get("column_changes"):
        return describe_column_changes(rule["column_changes"])
    seen = rule.get("error") or rule.get("observed_value")
    if seen is None and "unexpected_count" in rule:
        seen = f"{rule['unexpected_count']} of {rule.get('element_count')} rows, e.g. " \
               f"{rule.get('unexpected_examples', [])[:5]}"
    return str(seen)


def failure_explanation(summary: dict[str, Any], severity: str) -> list[str]:
    """The broken rules of one severity as lines a person reads in a task log: rule and contract line,
    then what was observed and, for row rules, example values (the report has the rest)."""
    lines = []
    for rule in (rule for rule in summary["failed"] if rule["severity"] == severity):
        lines.append(f"  {rule['rule']} (contract line {rule['line']}): {rule['description']}")
        if rule.get("column_changes") or rule.get("error") or rule.get("observed_value") is not None:
            lines.append(f"      observed: {observed(rule)}")
        elif "unexpected_count" in rule:
            lines.append(f"      observed: {rule['unexpected_count']} of {rule.get('element_count')} rows break it")
            if rule.get("unexpected_examples"):
                lines.append(f"      examples: {', '.join(map(str, rule['unexpected_examples'][:5]))}")
    return lines


def failure_message(summary: dict[str, Any], severity: str) -> str:
    """The broken rules of one severity, each with its contract line and what was observed."""
    return "; ".join(f"{rule['rule']} (line {rule['line']}: {rule['description']}): observed {observed(rule)}"
                     for rule in summary["failed"] if rule["severity"] == severity)
