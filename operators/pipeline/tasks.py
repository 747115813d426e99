"""What each pipeline task does. Heavy libraries (dvc, great_expectations, mlflow) are imported
inside the functions, so building the DAG stays cheap."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NoReturn

from operators.clients import dvc_remote_config, s3_client
from operators.connections import MLFLOW_CONN, REPORTS_BUCKET, STAGING_BUCKET, job_connections
from operators.pipeline.links import (
    MlflowRunLink,
    ModelVersionLink,
    ValidationReportLink,
    airflow_base_url,
    mlflow_base_url,
)
from operators.records import (
    GateVerdict,
    PinnedDataset,
    RegisteredVersion,
    Replayed,
    SlurmJob,
    StewardDecision,
    TrackingRun,
    ValidationOutcome,
)
from operators.run_parameters import PipelineRun, RunParameterError, pipeline_run
from operators.spec import Pipeline
from operators.units import md5_of

log = logging.getLogger(__name__)


def run_parameters(spec: Pipeline, context: dict[str, Any]) -> PipelineRun:
    """The run's parameters, checked like the spec; a bad one fails the task naming it (nothing else runs)."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return pipeline_run(spec, context["params"], context["dag_run"].conf)
    except RunParameterError as error:
        raise AirflowFailException(f"run parameters of {spec.dag_id}:\n{error}") from None


def pin_dataset(spec: Pipeline, **context: Any) -> dict[str, Any]:
    """Pin the revision this run trains on: a ``revision`` run parameter other than the spec's, else the
    newest dataset-version event that triggered the run (``dataset_registry_watch``), else the spec's.
    The first task: the run's parameters are checked here, before anything is read or submitted."""
    from operators.datasets.assets import choose_revision, triggering_events
    from operators.datasets.pin import pin_dataset as pin

    run = run_parameters(spec, context)
    choice = choose_revision(spec.dataset, run.revision, triggering_events(context, spec.dataset))
    print(f"pinning dataset {spec.dataset.name} at {choice.revision}: {choice.reason}")
    pinned = PinnedDataset.of(pin(spec.dataset, choice.revision, remote_config=dvc_remote_config()))
    if choice.commit and pinned.commit != choice.commit:
        print(f"warning: {choice.revision} moved from {choice.commit} (the event's) to {pinned.commit} since the "
              "event; pinned the tag as it is now (its move is a new event, and a new run)")
    return pinned.as_xcom()


def validates_on_cluster(size: int, threshold: int, chosen: str = "auto") -> bool:
    return size > threshold if chosen == "auto" else chosen == "cluster"


def validate_data(spec: Pipeline, pinned: dict[str, Any], **context: Any) -> list[str]:
    """Validate small data here; leave data above the contract's ``validation.cluster_above`` to the Slurm
    job. A branch: returns the tasks to run next. The run's conf key ``validate_on`` (``worker`` or
    ``cluster``) overrides the threshold."""
    from operators.contracts.validate import validate_pinned, validated_object

    size = validated_object(pinned).get("size") or 0  # a sharded folder: only its manifest is read
    chosen = run_parameters(spec, context).validate_on
    contract = spec.data_contract
    if validates_on_cluster(size, contract.validation.cluster_above_bytes, chosen):
        print(f"{PinnedDataset.of(pinned).data['path']}: {size} bytes, above {contract.validation.cluster_above} "
              f"(validate_on {chosen}): validated by a Slurm job next to the data")
        return ["validate_data_on_cluster", "apply_contract"]
    summary = validate_pinned(pinned, contract, s3_client(), REPORTS_BUCKET, dag_id=spec.dag_id,
                              run_id=context["run_id"])
    ValidationReportLink.store(context, report_url(summary))
    print(f"{summary['status']}: {summary.get('rows', 0)} rows in {summary['seconds_total']} s on the worker")
    return ["apply_contract"]


def report_url(summary: dict[str, Any]) -> str:
    return f"{airflow_base_url()}/factory/reports/{summary['report']['index']}"


def stop_run(explanation: list[str]) -> NoReturn:
    """Fail the task with a readable explanation and no traceback: an expected outcome (a contract broken,
    a pipeline run that failed), not a crash. Airflow's task runner logs a traceback for every exception
    except ``SystemExit``, which it logs as one line and handles as a failure (retries as configured;
    the pipelines' tasks have none)."""
    for line in explanation:
        log.error("%s", line)
    raise SystemExit(1)


def apply_contract(spec: Pipeline, pinned: dict[str, Any], **context: Any) -> dict[str, Any]:
    """The contract's policy on the published summary, wherever it was validated: errors stop the run
    before anything trains; warnings go to a data steward (``steward_review``)."""
    from operators.contracts.validate import (
        dataset_version,
        failure_explanation,
        get_json,
        run_prefix,
    )

    dataset = PinnedDataset.of(pinned)
    prefix = run_prefix(dataset.name, dataset.revision, context["run_id"])
    summary = get_json(s3_client(), REPORTS_BUCKET, f"{prefix}/summary.json")
    ValidationReportLink.store(context, report_url(summary))
    report = f"Report: {report_url(summary)} (s3://{REPORTS_BUCKET}/{summary['report']['index']})"
    if summary["status"] == "unreadable":
        stop_run([f"{summary['error']}.", "Nothing was submitted to Slurm.", report])
    if summary["status"] == "failed":
        stop_run([f"{dataset_version(pinned)} breaks contract {spec.contract} ({spec.contract_file}):",
                  *failure_explanation(summary, "error"), "Nothing was submitted to Slurm.", report])
    if summary["status"] == "warned":
        print("\n".join([f"{dataset_version(pinned)} breaks warn rules of contract {spec.contract}; a data steward "
                         "decides (steward_review):", *failure_explanation(summary, "warn"), report]))
    # what later tasks need; the full summary (rules, profiles) stays in S3
    return ValidationOutcome.of({item.name: summary.get(item.name) for item in fields(ValidationOutcome)}).as_xcom()


def code_version(folder: Path) -> str:
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                            timeout=30)
    sha = result.stdout.strip() if result.returncode == 0 else "unknown"
    dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."],
                           capture_output=True, text=True, timeout=30).stdout.strip()
    return f"{sha}-dirty" if dirty else sha


def spec_hash(spec: Pipeline) -> str:
    """sha256 of the spec file as committed: which configuration produced a model version."""
    import hashlib

    return hashlib.sha256(spec.file.read_bytes()).hexdigest()


def dataset_inputs(pinned: PinnedDataset, validation: ValidationOutcome) -> list[Any]:
    """The pinned splits as MLflow dataset inputs: digest = DVC md5, source = where DVC keeps the version."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for split, context in ((pinned.data, "training"), (pinned.test, "evaluation")):
        source = {"repository": pinned.repository, "path": split["path"], "revision": pinned.revision,
                  "commit": pinned.commit, "url": split["url"]}
        profile = {"size_bytes": split.get("size")}
        if context == "training":  # what the contract saw
            profile |= {"num_rows": validation.rows, "contract": validation.status}
        dataset = Dataset(name=f"{pinned.name}/{split['path'].rsplit('/', 1)[-1]}@{pinned.revision}",
                          digest=split["md5"], source_type="dvc", source=json.dumps(source),
                          profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def start_run(spec: Pipeline, pinned: dict[str, Any], validation: dict[str, Any],
              review: dict[str, Any] | None, **context: Any) -> dict[str, Any]:
    """Create the MLflow run the Slurm jobs log into, tagged with the data and the orchestration."""
    from operators.clients import mlflow_tracking
    from operators.datasets.shards import job_inputs

    ti = context["ti"]
    dataset, outcome = PinnedDataset.of(pinned), ValidationOutcome.of(validation)
    decision = StewardDecision.of(review).decision if review else "none"
    params = run_parameters(spec, context).train_params
    with mlflow_tracking(MLFLOW_CONN):
        import mlflow
        from mlflow import MlflowClient

        client = MlflowClient()
        experiment = client.get_experiment_by_name(spec.name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(spec.name)
        run = client.create_run(experiment_id, run_name=context["run_id"][:250], tags={
            "dataset.name": dataset.name, "dataset.repository": dataset.repository,
            "dataset.revision": dataset.revision, "dataset.commit": dataset.commit,
            "dataset.md5": dataset.data["md5"], "dataset.test_md5": dataset.test["md5"],
            "validation.status": outcome.status, "validation.decision": decision,
            "validation.report": f"s3://{REPORTS_BUCKET}/{outcome.report['index']}",
            "code.git_sha": code_version(spec.folder), "airflow.dag_id": ti.dag_id,
            "airflow.run_id": ti.run_id, "pipeline": spec.name, "pipeline.site": spec.site,
            "pipeline.spec_sha256": spec_hash(spec), "tracking.mode": "offline" if spec.offline_tracking else "online"})
        client.log_inputs(run.info.run_id, datasets=dataset_inputs(dataset, outcome))
        if not spec.offline_tracking:  # the jobs log into this run with the pipeline's own job user
            from airflow.sdk.bases.hook import BaseHook

            from operators.registry.job_access import grant_job_access

            job_user = BaseHook.get_connection(job_connections(spec.name).mlflow).login
            granted = grant_job_access(mlflow.get_tracking_uri(), job_user, experiment_id,
                                       spec.registry.model_name)
            print(f"MLflow user {job_user} (the jobs'): {', '.join(granted) or 'permissions already in place'}")
    MlflowRunLink.store(context, f"{mlflow_base_url(MLFLOW_CONN)}/#/experiments/{experiment_id}/runs/"
                                 f"{run.info.run_id}")

    def inputs(split: dict[str, Any], stem: str) -> list[dict[str, Any]]:
        """``data/train.csv`` for a file (its own suffix), ``data/train/`` for a sharded folder."""
        return job_inputs(split, stem if "shards" in split else stem + Path(split["path"]).suffix)

    return TrackingRun(run.info.run_id, experiment_id, params, inputs(dataset.data, "train"),
                       inputs(dataset.test, "test")).as_xcom()


def gate(spec: Pipeline, run: dict[str, Any], train: dict[str, Any], evaluate: dict[str, Any],
         **context: Any) -> dict[str, Any]:
    """Thresholds and the champion comparison on metrics the evaluation job logged."""
    from operators.clients import mlflow_tracking
    from operators.registry.aliases import version_by_alias
    from operators.registry.gate import decide
    from operators.registry.model_card import comparison_rows, comparison_table

    run_id = TrackingRun.of(run).run_id
    train_job, evaluate_job = SlurmJob.of(train).as_xcom(), SlurmJob.of(evaluate).as_xcom()
    with mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient
        from mlflow.entities import Metric, RunTag

        client, now = MlflowClient(), int(time.time() * 1000)
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
        accounting = [Metric(f"slurm_{role}_{name}", float(job[name]), now, 0)
                      for job, role in ((train_job, "train"), (evaluate_job, "evaluate"))
                      for name in ("elapsed_s", "cpu_time_s", "max_rss_bytes", "gpu_hours", "energy_j")
                      if job.get(name) is not None]  # energy only where the site records it
        champion_version = version_by_alias(client, spec.registry.model_name, spec.registry.aliases.champion) \
            if champion is not None else None
        rows = comparison_rows(challenger, champion, spec.evaluation.thresholds, spec.evaluation.metrics)
        cost = job_cost(train_job, evaluate_job)
        tags = {"slurm.cluster": str(train_job["cluster"]), "slurm.train.job_id": str(train_job["job_id"]),
                "slurm.evaluate.job_id": str(evaluate_job["job_id"]), "gate.promote": str(decision.promote),
                "gate.reasons": json.dumps(decision.reasons), "gate.champion_version": champion_version or "none",
                **{f"cost.{key}": f"{value:.6g}" for key, value in cost.items() if value is not None},
                **{f"cost.allocation_remaining.{tres.replace('/', '_')}_minutes": str(minutes)
                   for tres, minutes in (evaluate_job.get("allocation") or {}).items()}}
        client.log_batch(run_id, metrics=accounting, tags=[RunTag(key, value) for key, value in tags.items()])
        label = f"champion v{champion_version}" if champion_version else "no champion"
        client.log_text(run_id, comparison_table(rows, label) + "\n", "gate/comparison.md")
        client.log_dict(run_id, {**decision.as_dict(), "comparison": rows, "champion_version": champion_version},
                        "gate/decision.json")
    return GateVerdict(**decision.as_dict(), comparison=rows, champion_version=champion_version,
                       cost=cost).as_xcom()


def job_cost(*jobs: dict[str, Any]) -> dict[str, float | None]:
    """What the run's Slurm jobs cost together; a figure no job's accounting had stays None (not 0)."""
    def total(key: str, scale: float = 1.0) -> float | None:
        known = [job[key] for job in jobs if job.get(key) is not None]
        return sum(known) * scale if known else None

    return {"elapsed_s": total("elapsed_s"), "cpu_hours": total("cpu_time_s", 1 / 3600),
            "gpu_hours": total("gpu_hours"), "energy_j": total("energy_j")}


LINEAGE_TAG_GROUPS = {"dataset", "validation", "code", "airflow", "slurm", "gate", "pipeline", "cost", "tracking"}


def register(spec: Pipeline, run: dict[str, Any], verdict: dict[str, Any], validation: dict[str, Any],
             **context: Any) -> dict[str, Any]:
    """A model version with its lineage and model card, alias challenger. When the gate passed, the rollout
    (push_to_inference) makes it the champion once it serves."""
    from operators.clients import mlflow_tracking
    from operators.registry.aliases import version_by_alias
    from operators.registry.model_card import model_card

    ti = context["ti"]
    run, decision = TrackingRun.of(run).as_xcom(), GateVerdict.of(verdict).as_xcom()
    name = spec.registry.model_name
    with mlflow_tracking(MLFLOW_CONN):
        import mlflow
        from mlflow import MlflowClient

        client = MlflowClient()
        run_tags = client.get_run(run["run_id"]).data.tags
        tags = {key: value for key, value in run_tags.items() if key.split(".")[0] in LINEAGE_TAG_GROUPS}
        tags["validation.report_url"] = report_url(ValidationOutcome.of(validation).as_xcom())
        aliases = spec.registry.aliases
        previous = version_by_alias(client, name, aliases.champion)
        version = mlflow.register_model(f"runs:/{run['run_id']}/model", name, tags={**tags, **spec.registry.tags})
        client.set_registered_model_alias(name, aliases.challenger, version.version)
        # the champion alias moves in push_to_inference, once this version serves as the default
        client.set_model_version_tag(name, version.version, "gate.promoted", str(decision["promote"]))
        base = mlflow_base_url(MLFLOW_CONN)
        card = model_card({
            "model": name, "version": version.version, "promoted": decision["promote"],
            "intended_use": spec.registry.intended_use, "description": spec.description, "tags": tags,
            "rows": decision["comparison"], "champion_version": decision["champion_version"],
            "reasons": decision["reasons"],
            "cost": decision["cost"],
            "plots": sorted(a.path for a in client.list_artifacts(run["run_id"], "evaluation")
                            if a.path.endswith(".png")),
            "links": {"validation report": tags["validation.report_url"],
                      "MLflow run": f"{base}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}",
                      "Airflow run": f"{airflow_base_url()}/dags/{ti.dag_id}/runs/{ti.run_id}"}})
        client.log_text(run["run_id"], card, "model_card.md")
        client.update_model_version(name, version.version, description=card)
        client.set_model_version_tag(name, version.version, "model_card", f"runs:/{run['run_id']}/model_card.md")
    ModelVersionLink.store(context, f"{base}/#/models/{name}/versions/{version.version}")
    return RegisteredVersion(name, version.version, decision["promote"], previous).as_xcom()


def _replay(spec: Pipeline, step: str, run: TrackingRun, job: SlurmJob, context: dict[str, Any]) -> Replayed:
    """Copy the step's offline MLflow store from the job's folder (through the Slurm connection, as its
    files were staged) and replay it into the pipeline's run; idempotent, so a retry is safe."""
    from operators.clients import mlflow_tracking
    from operators.slurm.hooks import SlurmHook
    from operators.tracking.offline import STORE_DIR
    from operators.tracking.replay import replay

    store = f"{job.workdir}/{STORE_DIR}"
    with tempfile.TemporaryDirectory(prefix="offline-mlflow-") as tmp, mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient

        SlurmHook(spec.connection).get_transport().fetch_folder(store, Path(tmp))
        counts = replay(Path(tmp), MlflowClient(), run.run_id,
                        {f"slurm.{step}.job_id": str(job.job_id), f"offline.{step}.store": store})
    MlflowRunLink.store(context, f"{mlflow_base_url(MLFLOW_CONN)}/#/experiments/{run.experiment_id}/runs/"
                                 f"{run.run_id}")
    added = counts.added
    print(f"replayed {store} (Slurm job {job.job_id}) into MLflow run {run.run_id}: "
          f"{counts.params} params, {counts.metrics} metric points, {counts.tags} tags, {counts.artifacts} "
          f"artifact files, {counts.models} models; added now: {added}")
    return Replayed.of(counts.as_dict())


def replay_train(spec: Pipeline, run: dict[str, Any], train: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Replay the training job's store, then stage the models the offline evaluation job scores."""
    tracking = TrackingRun.of(run)
    replayed = _replay(spec, "train", tracking, SlurmJob.of(train), context)
    return replace(replayed, evaluate_inputs=stage_models(spec, tracking, context)).as_xcom()


def replay_evaluate(spec: Pipeline, run: dict[str, Any], evaluate: dict[str, Any],
                    **context: Any) -> dict[str, Any]:
    counts = _replay(spec, "evaluate", TrackingRun.of(run), SlurmJob.of(evaluate), context).as_xcom()
    s3, prefix = s3_client(), f"{spec.dag_id}/{context['run_id']}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=STAGING_BUCKET, Prefix=prefix):
        if page.get("Contents"):
            s3.delete_objects(Bucket=STAGING_BUCKET, Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]]})
    return counts


def stage_models(spec: Pipeline, run: TrackingRun, context: dict[str, Any]) -> list[dict[str, str]]:
    """The evaluation job's inputs when it cannot reach the registry: the test split, the challenger
    as replayed (so the model evaluated is the one registered) and the champion's pinned version, each
    file in S3 with its md5 (``python -m operators.jobs.fetch`` checks them)."""
    from operators.clients import mlflow_tracking
    from operators.pipeline.steps import OFFLINE_MODELS
    from operators.registry.aliases import version_by_alias

    name, prefix = spec.registry.model_name, f"{spec.dag_id}/{context['run_id']}/models"
    items = [{**item, "name": f"data/{item['name']}"} for item in run.test_inputs]
    with tempfile.TemporaryDirectory(prefix="staged-models-") as tmp, mlflow_tracking(MLFLOW_CONN):
        import mlflow
        from mlflow import MlflowClient

        uris = {"challenger": f"runs:/{run.run_id}/model"}
        champion = version_by_alias(MlflowClient(), name, spec.registry.aliases.champion) \
            if spec.evaluation.compare_with_champion else None
        if champion is not None:
            uris["champion"] = f"models:/{name}/{champion}"
        s3 = s3_client()
        for role, uri in uris.items():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=f"{tmp}/{role}"))
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                relative = path.relative_to(local).as_posix()
                s3.upload_file(str(path), STAGING_BUCKET, f"{prefix}/{role}/{relative}")
                items.append({"name": f"{OFFLINE_MODELS[role]}/{relative}", "md5": md5_of(path),
                              "url": f"s3://{STAGING_BUCKET}/{prefix}/{role}/{relative}"})
            print(f"staged {role} {uri} for the offline evaluation job")
    return items
