"""Push a registered model version into a V2 inference server's model repository.

One folder per version (``<repository>/<model>/<version>/``); the server loads the model by
name. If loading or the smoke test fails, the new folder is removed and the model reloaded, so
the versions that served before keep serving.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from operators.serving.v2 import InferenceError, V2Client


class PushError(RuntimeError):
    """Loading or smoke-testing a new version failed; the previous version keeps serving."""


def smoke_request(example: dict[str, Any]) -> list[dict[str, Any]]:
    """V2 inputs from the model's MLflow serving input example (``dataframe_split``): one input per
    named column, which MLServer's pandas codec turns back into the DataFrame the signature wants."""
    split = example["dataframe_split"]
    rows = split["data"]
    if "columns" not in split:
        return [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                 "data": [float(value) for row in rows for value in row]}]
    return [{"name": column, "shape": [len(rows), 1], "datatype": "FP64",
             "data": [float(row[index]) for row in rows]} for index, column in enumerate(split["columns"])]


def install_version(model_dir: Path, repository: Path, model: str, version: str) -> Path:
    target = repository / model / version
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, target / "model")
    (target / "model-settings.json").write_text(json.dumps({
        "name": model, "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": "./model", "version": version}}, indent=2))
    return target


def push_version(client: V2Client, model_dir: Path, repository: Path, model: str, version: str,
                 allowed_outputs: list[Any] | None, inputs: list[list[float]] | None = None) -> dict[str, Any]:
    """``inputs``: the spec's smoke rows, in the column order of the model's input example."""
    example_file = model_dir / "serving_input_example.json"
    if not example_file.exists():
        raise PushError(f"{model} v{version}: the model has no serving input example to smoke-test with")
    example = json.loads(example_file.read_text())
    if inputs is not None:
        columns = example["dataframe_split"].get("columns")
        if columns is not None and any(len(row) != len(columns) for row in inputs):
            raise PushError(f"{model} v{version}: serving.smoke.inputs rows must have {len(columns)} values "
                            f"(the model's columns: {', '.join(columns)})")
        example = {"dataframe_split": {**({"columns": columns} if columns else {}), "data": inputs}}
    request = smoke_request(example)
    target = install_version(model_dir, repository, model, version)
    try:
        client.load(model)
        answer = client.infer(model, request, version=version, parameters={"content_type": "pd"})
        outputs = answer["outputs"][0]["data"]
        if allowed_outputs is not None and any(value not in allowed_outputs for value in outputs):
            raise PushError(f"{model} v{version}: smoke test answered {outputs}, allowed {allowed_outputs}")
    except (InferenceError, PushError, KeyError) as error:
        shutil.rmtree(target)
        try:
            client.load(model)  # back to the versions that served before
        except InferenceError:
            client.unload(model)
        raise PushError(f"{model} v{version} not pushed, previous version keeps serving: {error}") from None
    return {"model": model, "version": version, "folder": str(target), "smoke_outputs": outputs}
