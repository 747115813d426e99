"""The MLflow server: authentication on, artifacts in S3, a model registry."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from pathlib import Path

import mlflow.pyfunc
import pytest


@pytest.fixture
def mlflow_client(stack_info, monkeypatch):
    import mlflow

    config = stack_info["mlflow"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", config["username"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", config["password"])
    mlflow.set_tracking_uri(config["url"])
    return mlflow


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_requests_without_credentials_are_refused(stack_info):
    url = f"{stack_info['mlflow']['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status_of(url) == 401
    import base64

    wrong = base64.b64encode(f"{stack_info['mlflow']['username']}:wrong".encode()).decode()
    assert status_of(url, {"Authorization": f"Basic {wrong}"}) == 401


def test_run_logs_params_metrics_and_an_artifact_to_s3(mlflow_client, stack_info, tmp_path):
    mlflow = mlflow_client
    mlflow.set_experiment(f"stack-test-{uuid.uuid4().hex[:8]}")
    note = tmp_path / "note.txt"
    note.write_text("artifact through the server into S3")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("accuracy", 0.93, step=1)
        mlflow.log_artifact(str(note))
    stored = mlflow.get_run(run.info.run_id)
    assert stored.data.params == {"alpha": "0.5"}
    assert stored.data.metrics == {"accuracy": 0.93}
    assert stored.info.artifact_uri.startswith("mlflow-artifacts:")
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt",
                                                     dst_path=str(tmp_path / "back"))
    assert Path(downloaded).read_text() == note.read_text()

    import boto3

    s3 = boto3.client("s3", endpoint_url=stack_info["s3"]["endpoint_url"], region_name="us-east-1",
                      aws_access_key_id=stack_info["s3"]["access_key"],
                      aws_secret_access_key=stack_info["s3"]["secret_key"])
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(key.endswith(f"{run.info.run_id}/artifacts/note.txt") for key in keys)


def test_model_version_is_registered_with_alias(mlflow_client, tmp_path):
    mlflow = mlflow_client
    from mlflow import MlflowClient

    name = f"stack-test-model-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment("stack-test-registry")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=["mlflow"])
    version = mlflow.register_model(info.model_uri, name)
    client = MlflowClient()
    client.set_registered_model_alias(name, "champion", version.version)
    assert client.get_model_version_by_alias(name, "champion").version == version.version
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(loaded.predict([1.0, 2.5])) == [2.0, 5.0]


class Doubler(mlflow.pyfunc.PythonModel):
    """A tiny pyfunc model; defined at module level so MLflow can pickle it by reference."""

    def predict(self, context, model_input: list[float], params=None) -> list[float]:
        return [2 * value for value in model_input]
