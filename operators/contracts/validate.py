"""Validate a pinned dataset version against its data contract with Great Expectations 1.x.

The contract (``data_contracts/<dataset>.yaml``) is compiled to a GX expectation suite; GX runs
it and builds Data Docs, which are published to S3 with a summary JSON. great_expectations is
imported inside functions only (it costs ~6 s to import).
"""

from __future__ import annotations

import json
import mimetypes
import tempfile
from pathlib import Path
from typing import Any

import yaml

TYPE_NAMES = {
    "int": ["int64", "int32", "int16", "int8", "Int64"],
    "float": ["float64", "float32", "int64", "int32"],
    "str": ["object", "str", "string"],
    "bool": ["bool", "boolean"],
}
COLUMN_KEYS = {"type", "nullable", "min", "max", "allowed", "unique", "description"}
CONTRACT_KEYS = {"dataset", "owner", "row_count", "columns", "description"}


class ContractError(ValueError):
    """The contract file itself is wrong: names the file, the field and the allowed values."""


def load_contract(path: Path) -> dict[str, Any]:
    try:
        contract = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ContractError(f"{path}: no such contract") from None
    if not isinstance(contract, dict):
        raise ContractError(f"{path}: expected a mapping")
    unknown = set(contract) - CONTRACT_KEYS
    if unknown:
        raise ContractError(f"{path}: unknown key(s) {sorted(unknown)} (allowed: {sorted(CONTRACT_KEYS)})")
    for column, rules in (contract.get("columns") or {}).items():
        bad = set(rules) - COLUMN_KEYS
        if bad:
            raise ContractError(f"{path}: columns.{column}: unknown key(s) {sorted(bad)} "
                                f"(allowed: {sorted(COLUMN_KEYS)})")
        if "type" in rules and rules["type"] not in TYPE_NAMES:
            raise ContractError(f"{path}: columns.{column}.type: {rules['type']!r} "
                                f"(allowed: {', '.join(TYPE_NAMES)})")
    return contract


def expectations(contract: dict[str, Any]) -> list[Any]:
    """The GX expectations for a contract, each with a ``notes`` text a steward can read."""
    import great_expectations.expectations as gxe

    rules: list[Any] = []
    rows = contract.get("row_count") or {}
    if rows:
        rules.append(gxe.ExpectTableRowCountToBeBetween(min_value=rows.get("min"), max_value=rows.get("max")))
    for column, spec in (contract.get("columns") or {}).items():
        rules.append(gxe.ExpectColumnToExist(column=column))
        if "type" in spec:
            rules.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=TYPE_NAMES[spec["type"]]))
        if spec.get("nullable") is False:
            rules.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        if "min" in spec or "max" in spec:
            rules.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=spec.get("min"),
                                                           max_value=spec.get("max")))
        if "allowed" in spec:
            rules.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=spec["allowed"]))
        if spec.get("unique"):
            rules.append(gxe.ExpectColumnValuesToBeUnique(column=column))
    return rules


def validate_frame(frame, contract: dict[str, Any], docs_dir: Path, run_name: str) -> dict[str, Any]:
    """Run the contract on a DataFrame; Data Docs land in ``docs_dir``. Returns a summary."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars in task logs
    name = contract["dataset"]
    asset = context.data_sources.add_pandas(f"{name}-source").add_dataframe_asset(name=f"{name}-data")
    batch = asset.add_batch_definition_whole_dataframe(f"{name}-batch")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}-contract", expectations=expectations(contract)))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}-validation", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{name}-checkpoint", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")], result_format="SUMMARY"))
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=gx.core.run_identifier.RunIdentifier(
        run_name=run_name))
    failed = []
    for validation in result.run_results.values():
        for outcome in validation.results:
            if not outcome.success:
                config = outcome.expectation_config
                failed.append({"rule": config.type, "column": config.kwargs.get("column"),
                               "observed": _observed(outcome.result)})
    return {"success": bool(result.success), "rules": sum(len(v.results) for v in result.run_results.values()),
            "failed": failed, "rows": len(frame)}


def _observed(result: dict[str, Any]) -> Any:
    for key in ("observed_value", "unexpected_count", "partial_unexpected_list"):
        if key in result:
            value = result[key]
            return value[:5] if isinstance(value, list) else value
    return None


def publish(local_dir: Path, s3_client, bucket: str, prefix: str) -> list[str]:
    """Upload a folder of HTML reports to S3 with content types, so a browser renders them."""
    keys = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(local_dir)}"
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3_client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        keys.append(key)
    return keys


def validate_pinned(pinned: dict[str, Any], contract_path: Path, s3_client, reports_bucket: str,
                    run_name: str) -> dict[str, Any]:
    """Read the pinned data file from S3, validate it, publish Data Docs and the summary."""
    import io
    from urllib.parse import urlparse

    import pandas as pd

    contract = load_contract(contract_path)
    where = f"{pinned['name']} at {pinned['revision']} ({pinned['commit'][:10]}) {pinned['data']['path']}"
    url = urlparse(pinned["data"]["url"])
    body = s3_client.get_object(Bucket=url.netloc, Key=url.path.lstrip("/"))["Body"].read()
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, pd.errors.ParserError) as error:
        raise ContractError(f"{where}: cannot be read as CSV: {error}") from None
    if frame.empty:
        raise ContractError(f"{where}: the dataset is empty")
    prefix = f"validation/{pinned['name']}/{pinned['revision']}/{run_name}"
    with tempfile.TemporaryDirectory() as tmp:
        summary = validate_frame(frame, contract, Path(tmp), run_name)
        summary.update({"dataset": pinned["name"], "revision": pinned["revision"], "commit": pinned["commit"],
                        "md5": pinned["data"]["md5"], "contract": str(contract_path.name)})
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
        publish(site, s3_client, reports_bucket, prefix)
    s3_client.put_object(Bucket=reports_bucket, Key=f"{prefix}/summary.json",
                         Body=json.dumps(summary, indent=2).encode(), ContentType="application/json")
    summary["report"] = {"bucket": reports_bucket, "prefix": prefix, "index": f"{prefix}/index.html"}
    return summary
