"""What each pipeline task does. Heavy libraries (dvc, great_expectations, mlflow) are imported
inside the functions, so building the DAG stays cheap."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from operators.pipeline.links import (
    MlflowRunLink,
    ModelVersionLink,
    ValidationReportLink,
    airflow_base_url,
    mlflow_base_url,
)
from operators.spec import PipelineSpec

S3_CONN = "factory_s3"
MLFLOW_CONN = "factory_mlflow"
REPORTS_BUCKET = "reports"


def s3_client(conn_id: str = S3_CONN):
    """boto3 S3 client of an Airflow connection (tasks, the steward review, the plugin pages)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def pin_dataset(spec: PipelineSpec, **context: Any) -> dict[str, Any]:
    from operators.datasets.pin import pin_dataset as pin

    revision = context["params"].get("revision") or spec.dataset.revision
    return pin(spec.dataset, revision)


def validates_on_cluster(size: int, threshold: int, chosen: str = "auto") -> bool:
    return size > threshold if chosen == "auto" else chosen == "cluster"


def validate_data(spec: PipelineSpec, **context: Any) -> list[str]:
    """Validate small data here; leave data above the contract's ``validation.cluster_above`` to the Slurm
    job. A branch: returns the tasks to run next. The run's conf key ``validate_on`` (``worker`` or
    ``cluster``) overrides the threshold."""
    from operators.contracts.validate import validate_pinned

    pinned = context["ti"].xcom_pull(task_ids="pin_dataset")
    size = pinned["data"].get("size") or 0
    chosen = (context["dag_run"].conf or {}).get("validate_on") or "auto"
    contract = spec.data_contract
    if validates_on_cluster(size, contract.validation.cluster_above_bytes, chosen):
        print(f"{pinned['data']['path']}: {size} bytes, above {contract.validation.cluster_above} "
              f"(validate_on {chosen}): validated by a Slurm job next to the data")
        return ["validate_data_on_cluster", "apply_contract"]
    summary = validate_pinned(pinned, contract, s3_client(), REPORTS_BUCKET, dag_id=spec.dag_id,
                              run_id=context["run_id"])
    ValidationReportLink.store(context, report_url(summary))
    print(f"{summary['status']}: {summary.get('rows', 0)} rows in {summary['seconds_total']} s on the worker")
    return ["apply_contract"]


def report_url(summary: dict[str, Any]) -> str:
    return f"{airflow_base_url()}/factory/reports/{summary['report']['index']}"


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """What later tasks need in XCom; the full summary (rules, profiles) stays in S3."""
    keys = ("status", "success", "dataset", "revision", "commit", "md5", "rows", "counts", "report", "error",
            "validated_on", "seconds_total")
    return {key: summary.get(key) for key in keys}


def apply_contract(spec: PipelineSpec, **context: Any) -> dict[str, Any]:
    """The contract's policy on the published summary, wherever it was validated: errors stop the run
    before anything trains; warnings go to a data steward (``steward_review``)."""
    from airflow.sdk.exceptions import AirflowFailException

    from operators.contracts.validate import dataset_version, failure_message, get_json, run_prefix

    pinned = context["ti"].xcom_pull(task_ids="pin_dataset")
    prefix = run_prefix(pinned["name"], pinned["revision"], context["run_id"])
    summary = get_json(s3_client(), REPORTS_BUCKET, f"{prefix}/summary.json")
    ValidationReportLink.store(context, report_url(summary))
    report = f"Report: s3://{REPORTS_BUCKET}/{summary['report']['index']}"
    if summary["status"] == "unreadable":
        raise AirflowFailException(f"{summary['error']}. Nothing was submitted to Slurm. {report}")
    if summary["status"] == "failed":
        raise AirflowFailException(
            f"{dataset_version(pinned)} breaks contract {spec.contract} ({spec.contract_file}): "
            f"{failure_message(summary, 'error')}. Nothing was submitted to Slurm. {report}")
    if summary["status"] == "warned":
        print(f"warn rules broken, a data steward decides: {failure_message(summary, 'warn')}. {report}")
    return _brief(summary)


def code_version(folder: Path) -> str:
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    sha = result.stdout.strip() if result.returncode == 0 else "unknown"
    dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."],
                           capture_output=True, text=True).stdout.strip()
    return f"{sha}-dirty" if dirty else sha


def start_run(spec: PipelineSpec, **context: Any) -> dict[str, Any]:
    """Create the MLflow run the Slurm jobs log into, tagged with the data and the orchestration."""
    from operators.registry.connection import mlflow_tracking

    ti = context["ti"]
    pinned = ti.xcom_pull(task_ids="pin_dataset")
    validation = ti.xcom_pull(task_ids="apply_contract")
    params = {**spec.training.params, **(context["params"].get("train_params") or {})}
    with mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient

        client = MlflowClient()
        experiment = client.get_experiment_by_name(spec.name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(spec.name)
        run = client.create_run(experiment_id, run_name=context["run_id"][:250], tags={
            "dataset.name": pinned["name"], "dataset.repository": pinned["repository"],
            "dataset.revision": pinned["revision"], "dataset.commit": pinned["commit"],
            "dataset.md5": pinned["data"]["md5"], "dataset.test_md5": pinned["test"]["md5"],
            "validation.status": validation["status"],
            "validation.decision": (ti.xcom_pull(task_ids="steward_review") or {}).get("decision", "none"),
            "validation.report": f"s3://{REPORTS_BUCKET}/{validation['report']['index']}",
            "code.git_sha": code_version(spec.folder), "airflow.dag_id": ti.dag_id,
            "airflow.run_id": ti.run_id, "pipeline": spec.name})
    MlflowRunLink.store(context, f"{mlflow_base_url(MLFLOW_CONN)}/#/experiments/{experiment_id}/runs/"
                                 f"{run.info.run_id}")

    def inputs(role: str, name: str) -> list[dict[str, str]]:
        return [{"name": name, "url": pinned[role]["url"], "md5": pinned[role]["md5"]}]

    return {"run_id": run.info.run_id, "experiment_id": experiment_id, "params": params,
            "train_inputs": inputs("data", "train.csv"), "test_inputs": inputs("test", "test.csv")}


def gate(spec: PipelineSpec, **context: Any) -> dict[str, Any]:
    """Thresholds and the champion comparison on metrics the evaluation job logged."""
    from operators.registry.connection import mlflow_tracking
    from operators.registry.gate import decide

    ti = context["ti"]
    run_id = ti.xcom_pull(task_ids="start_run")["run_id"]
    train_job, evaluate_job = ti.xcom_pull(task_ids="train"), ti.xcom_pull(task_ids="evaluate")
    with mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient

        client = MlflowClient()
        metrics = client.get_run(run_id).data.metrics
        challenger = {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")}
        champion = {k.removeprefix("champion_test_"): v for k, v in metrics.items()
                    if k.startswith("champion_test_")} or None
        missing = [name for name in spec.evaluation.metrics if name not in challenger]
        if missing:
            raise ValueError(f"{spec.file}: evaluation.metrics lists {', '.join(missing)}, but the evaluation job "
                             f"logged only {', '.join(sorted(challenger)) or 'no test metric'} (as test_<metric>)")
        decision = decide(challenger, champion, spec.evaluation.thresholds, spec.evaluation.primary_metric,
                          spec.evaluation.min_improvement)
        for job, role in ((train_job, "train"), (evaluate_job, "evaluate")):
            client.set_tag(run_id, f"slurm.{role}.job_id", str(job["job_id"]))
            for name in ("elapsed_s", "cpu_time_s", "max_rss_bytes", "gpu_hours", "energy_j"):
                if job.get(name) is not None:  # energy only where the site records it
                    client.log_metric(run_id, f"slurm_{role}_{name}", float(job[name]))
        client.set_tag(run_id, "slurm.cluster", str(train_job["cluster"]))
        client.set_tag(run_id, "gate.promote", str(decision.promote))
        client.set_tag(run_id, "gate.reasons", json.dumps(decision.reasons))
    return decision.as_dict()


def register(spec: PipelineSpec, **context: Any) -> dict[str, Any]:
    """A model version with its lineage; alias challenger, and champion when the gate passed."""
    from operators.registry.connection import mlflow_tracking

    ti = context["ti"]
    run = ti.xcom_pull(task_ids="start_run")
    decision = ti.xcom_pull(task_ids="gate")
    name = spec.registry.model_name
    with mlflow_tracking(MLFLOW_CONN):
        import mlflow
        from mlflow import MlflowClient

        client = MlflowClient()
        run_tags = client.get_run(run["run_id"]).data.tags
        tags = {key: value for key, value in run_tags.items()
                if key.split(".")[0] in {"dataset", "validation", "code", "airflow", "slurm", "gate"}}
        aliases = spec.registry.aliases
        previous = _champion_version(client, name, aliases.champion)
        version = mlflow.register_model(f"runs:/{run['run_id']}/model", name, tags={**tags, **spec.registry.tags})
        client.set_registered_model_alias(name, aliases.challenger, version.version)
        if decision["promote"]:
            client.set_registered_model_alias(name, aliases.champion, version.version)
        client.set_model_version_tag(name, version.version, "gate.promoted", str(decision["promote"]))
    ModelVersionLink.store(context, f"{mlflow_base_url(MLFLOW_CONN)}/#/models/{name}/versions/{version.version}")
    return {"model": name, "version": version.version, "promoted": decision["promote"],
            "previous_champion": previous}


def _champion_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


def push_to_inference(spec: PipelineSpec, **context: Any) -> dict[str, Any]:
    """Export the promoted version into the inference server's repository, load, smoke-test."""
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.registry.connection import mlflow_tracking
    from operators.serving.push import push_version
    from operators.serving.v2 import V2Client

    registered = context["ti"].xcom_pull(task_ids="register")
    if not registered["promoted"]:
        raise AirflowSkipException(f"{registered['model']} v{registered['version']} was not promoted: "
                                   f"champion v{registered['previous_champion']} keeps serving")
    connection = BaseHook.get_connection(spec.serving.connection)
    extra = connection.extra_dejson
    client = V2Client(f"{connection.schema or 'http'}://{connection.host}:{connection.port}")
    with tempfile.TemporaryDirectory() as tmp, mlflow_tracking(MLFLOW_CONN):
        import mlflow

        model_dir = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{registered['model']}/{registered['version']}", dst_path=tmp))
        s3 = s3_client()
        for path in (p for p in model_dir.rglob("*") if p.is_file()):
            s3.upload_file(str(path), extra.get("bucket", "model-repository"),
                           f"{spec.serving.model_name}/{registered['version']}/model/{path.relative_to(model_dir)}")
        return push_version(client, model_dir, Path(extra["model_repository"]), spec.serving.model_name,
                            str(registered["version"]), spec.serving.smoke.allowed_outputs,
                            spec.serving.smoke.inputs)
