"""MLServer loads a model from its repository and answers Open Inference Protocol V2 requests."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).parent


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        return error.code, {"error": error.read().decode()}


def test_model_from_repository_answers_v2_infer(stack_info, job_python):
    base = stack_info["mlserver"]["url"]
    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    version_dir = Path(stack_info["model_repository"]) / name / "1"
    version_dir.mkdir(parents=True)
    try:
        made = subprocess.run([job_python, str(HERE / "make_sklearn_model.py"), str(version_dir), name, "1"],
                              capture_output=True, text=True, timeout=180)
        assert made.returncode == 0, made.stderr
        sample = json.loads(made.stdout)

        status, body = call("POST", f"{base}/v2/repository/models/{name}/load")
        assert status == 200, body
        status, body = call("GET", f"{base}/v2/models/{name}/versions/1/ready")
        assert status == 200, body

        rows = sample["first_rows"]
        request = {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                               "data": [value for row in rows for value in row]}]}
        status, body = call("POST", f"{base}/v2/models/{name}/versions/1/infer", request)
        assert status == 200, body
        assert body["model_name"] == name
        assert [int(value) for value in body["outputs"][0]["data"]] == sample["expected"]

        status, index = call("POST", f"{base}/v2/repository/index", {})
        assert any(entry["name"] == name and entry["state"] == "READY" for entry in index)
    finally:
        call("POST", f"{base}/v2/repository/models/{name}/unload")
        shutil.rmtree(version_dir.parent)
