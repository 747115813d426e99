"""Least privilege for jobs (issue 16): a real Slurm job with pipeline ``breast_cancer``'s job credentials (what
``SlurmJobOperator`` gives it) can read datasets and write its own outputs, and cannot overwrite a dataset,
another pipeline's staged models or validation reports, the MLflow artifact store, another pipeline's run
artifacts or another pipeline's registered model."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from operators.connections import job_connections
from operators.registry.job_access import grant_job_access
from stack.job_access import JobAccess
from stack.settings import StackPaths, StackSecrets

PROBE = textwrap.dedent('''
    import json, os, sys
    import boto3
    from botocore.exceptions import ClientError
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    targets = json.load(open(sys.argv[1]))
    s3 = boto3.client("s3")
    outcome = {}

    def attempt(name, call):
        try:
            call()
            outcome[name] = "allowed"
        except ClientError as error:
            outcome[name] = error.response["Error"]["Code"]
        except MlflowException as error:
            outcome[name] = error.error_code

    attempt("read a dataset object", lambda: s3.get_object(Bucket="datasets", Key=targets["dataset_key"]))
    attempt("overwrite a dataset object", lambda: s3.put_object(Bucket="datasets", Key=targets["dataset_key"],
                                                                 Body=b"poisoned"))
    attempt("write the MLflow artifact store", lambda: s3.put_object(Bucket="mlflow-artifacts",
                                                                      Key=targets["artifact_key"], Body=b"x"))
    attempt("write another pipeline's staged models", lambda: s3.put_object(
        Bucket="job-staging", Key="pipeline_breast_cancer_ddp/run/models/challenger/MLmodel", Body=b"x"))
    attempt("write its own dataset's validation report", lambda: s3.put_object(
        Bucket="reports", Key="validation/breast_cancer/probe/probe.txt", Body=b"ok"))
    attempt("write another dataset's validation report", lambda: s3.put_object(
        Bucket="reports", Key="validation/other_dataset/probe/probe.txt", Body=b"x"))
    client = MlflowClient()
    attempt("log into its own run", lambda: client.log_text(targets["own_run"], "ok", "probe/own.txt"))
    attempt("overwrite another pipeline's run artifact", lambda: client.log_text(
        targets["other_run"], "poisoned", "model/MLmodel"))
    attempt("tag another pipeline's run", lambda: client.set_tag(targets["other_run"], "poisoned", "yes"))
    attempt("move another pipeline's champion", lambda: client.set_registered_model_alias(
        targets["other_model"], "champion", "1"))
    attempt("read another pipeline's run", lambda: client.get_run(targets["other_run"]))
    print("PROBE " + json.dumps(outcome))
''')


@pytest.fixture(scope="module")
def mlflow_admin(stack_info):
    os.environ["MLFLOW_TRACKING_USERNAME"] = stack_info["mlflow"]["username"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = stack_info["mlflow"]["password"]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack_info["mlflow"]["url"])


def experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def test_a_job_reads_its_inputs_writes_its_outputs_and_nothing_of_another_pipeline(
        stack_info, run_job, mlflow_admin, tmp_path: Path) -> None:
    paths = StackPaths.from_env()
    connections = JobAccess(StackSecrets(paths)).connections()
    s3 = connections[job_connections("breast_cancer").s3]
    mlflow_conn = connections[job_connections("breast_cancer").mlflow]
    own = mlflow_admin.create_run(experiment(mlflow_admin, "breast_cancer")).info.run_id
    other = mlflow_admin.create_run(experiment(mlflow_admin, "breast_cancer_ddp")).info.run_id
    mlflow_admin.log_text(other, "original", "model/MLmodel")
    other_model = f"access-probe-{uuid.uuid4().hex[:6]}"
    mlflow_admin.create_registered_model(other_model)
    grant_job_access(stack_info["mlflow"]["url"], mlflow_conn["login"],
                     experiment(mlflow_admin, "breast_cancer"), "breast-cancer-classifier")  # as start_run does
    admin_s3 = __import__("boto3").client("s3", endpoint_url=stack_info["s3"]["endpoint_url"],
                                          aws_access_key_id=stack_info["s3"]["access_key"],
                                          aws_secret_access_key=stack_info["s3"]["secret_key"],
                                          region_name="us-east-1")
    dataset_key = admin_s3.list_objects_v2(Bucket="datasets", MaxKeys=1)["Contents"][0]["Key"]
    before = admin_s3.get_object(Bucket="datasets", Key=dataset_key)["Body"].read()

    work = Path(stack_info["jobs_dir"]) / f"access-probe-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    job_user = pwd.getpwnam(stack_info["job_user"])
    env = {"AWS_ACCESS_KEY_ID": s3["login"], "AWS_SECRET_ACCESS_KEY": s3["password"],
           "AWS_ENDPOINT_URL": s3["extra"]["endpoint_url"], "AWS_DEFAULT_REGION": "us-east-1",
           "MLFLOW_TRACKING_URI": stack_info["mlflow"]["url"], "MLFLOW_TRACKING_USERNAME": mlflow_conn["login"],
           "MLFLOW_TRACKING_PASSWORD": mlflow_conn["password"]}
    files = {"job.env": "".join(f"export {key}='{value}'\n" for key, value in env.items()), "probe.py": PROBE,
             "targets.json": json.dumps({"dataset_key": dataset_key, "artifact_key": "1/probe/artifacts/x",
                                         "own_run": own, "other_run": other, "other_model": other_model})}
    for name, content in files.items():
        (work / name).write_text(content)
        (work / name).chmod(0o600)
    for path in (work, *work.iterdir()):
        os.chown(path, job_user.pw_uid, job_user.pw_gid)
    python = Path(stack_info["venvs"]["job-runtime"]) / "bin" / "python"
    try:
        job = run_job(f"source {work}/job.env\n{python} {work}/probe.py {work}/targets.json", timeout_s=180)
    finally:
        shutil.rmtree(work)  # the job's credentials do not outlive it
    assert job.state == "COMPLETED", job.output
    outcome = json.loads(job.output.split("PROBE ", 1)[1].splitlines()[0])
    assert outcome == {
        "read a dataset object": "allowed",
        "overwrite a dataset object": "AccessDenied",
        "write the MLflow artifact store": "AccessDenied",
        "write another pipeline's staged models": "AccessDenied",
        "write its own dataset's validation report": "allowed",
        "write another dataset's validation report": "AccessDenied",
        "log into its own run": "allowed",
        "overwrite another pipeline's run artifact": "PERMISSION_DENIED",
        "tag another pipeline's run": "PERMISSION_DENIED",
        "move another pipeline's champion": "PERMISSION_DENIED",
        "read another pipeline's run": "PERMISSION_DENIED",
    }, job.output
    assert admin_s3.get_object(Bucket="datasets", Key=dataset_key)["Body"].read() == before
    kept = Path(mlflow_admin.download_artifacts(other, "model/MLmodel", str(tmp_path)))
    assert kept.read_text() == "original"
