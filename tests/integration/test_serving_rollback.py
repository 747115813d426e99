"""A version that fails to load is removed again and the version that served before keeps serving."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from operators.serving.push import PushError, install_version, push_version
from operators.serving.v2 import V2Client

HERE = Path(__file__).parent


def test_failed_push_rolls_back_to_the_serving_version(stack_info, job_python, tmp_path):
    client = V2Client(stack_info["mlserver"]["url"])
    repository = Path(stack_info["model_repository"])
    name = f"rollback-test-{uuid.uuid4().hex[:8]}"
    good = tmp_path / "good"
    made = subprocess.run([job_python, str(HERE / "make_sklearn_model.py"), str(good), name, "1"],
                          capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, made.stderr
    sample = json.loads(made.stdout)
    (good / "model" / "serving_input_example.json").write_text(
        json.dumps({"dataframe_split": {"data": sample["first_rows"]}}))
    try:
        install_version(good / "model", repository, name, "1")
        client.load(name)
        broken = tmp_path / "broken"
        shutil.copytree(good / "model", broken)
        (broken / "MLmodel").write_text("this is not an MLmodel file\n")

        with pytest.raises(PushError, match="previous version keeps serving"):
            push_version(client, broken, repository, name, "2", allowed_outputs=[0, 1])

        assert not (repository / name / "2").exists()
        ready = {entry.get("version") for entry in client.repository_index()
                 if entry["name"] == name and entry["state"] == "READY"}
        assert ready == {"1"}
        rows = sample["first_rows"]
        answer = client.infer(name, [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                                      "data": [v for row in rows for v in row]}], version="1")
        assert [int(v) for v in answer["outputs"][0]["data"]] == sample["expected"]
    finally:
        if any(entry["name"] == name for entry in client.repository_index()):
            client.unload(name)
        shutil.rmtree(repository / name, ignore_errors=True)
