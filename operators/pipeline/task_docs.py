"""What each task of a pipeline's DAG will do, in words a reviewer checks against the spec.

``build_dag`` gives every task its sentence as ``doc_md`` (shown in Airflow's task details); ``factory plan``
reads them back from the built DAG, so the plan and the DAG cannot drift apart. Imports no Airflow.
"""

from __future__ import annotations

import json

from operators.pipeline.steps import job_options, step_spec
from operators.slurm.edge import edge_executor_configured
from operators.spec import Pipeline


def slurm_step(spec: Pipeline, step: str) -> str:
    job, site = step_spec(spec, step), spec.site_facts
    options = job_options(spec, step, site)
    resources = job.resources
    where = f"a container ({job.container.image}, {options['container'].runtime})" if job.container else \
        f"environment {job.environment or 'job-runtime'}"
    request = (f"{resources.nodes} node(s) x {resources.tasks_per_node} task(s), {resources.cpus_per_task} CPU(s) "
               f"per task, {resources.gpus_per_node} GPU(s) per node, {resources.memory} per node, "
               f"time limit {resources.time}, partition {options['partition'] or 'the cluster default'}")
    program = "the contract validation (python -m operators.contracts.job)" if step == "validate" else job.script
    edge = spec.edge_route if edge_executor_configured() else None
    submitter = (f"from the Edge worker of queue {edge.queue} on the login node, through connection "
                 f"{edge.connection}" if edge else f"through connection {spec.connection}")
    return (f"Slurm job on {site.title} {submitter}: {program} with launcher "
            f"{job.launcher} in {where}; {request}. Stages the pinned data from S3 into the job folder.")


def pin_dataset(spec: Pipeline) -> str:
    dataset = spec.dataset
    return (f"resolve revision {dataset.revision} of {dataset.path} and {dataset.test_path} in {dataset.repository} "
            "to a commit and md5")


def validate_data(spec: Pipeline) -> str:
    contract = spec.data_contract
    return (f"validate the pinned data against data_contracts/{spec.contract}.yaml ({len(contract.columns)} "
            f"columns) on the Airflow worker, or, above {contract.validation.cluster_above}, leave it to the Slurm "
            "job; publish Data Docs and summary.json to S3")


def validate_data_on_cluster(spec: Pipeline) -> str:
    return slurm_step(spec, "validate") + " Same validation, in chunks."


def apply_contract(spec: Pipeline) -> str:
    return "a broken error rule (or unreadable data) fails the run before anything trains; broken warn rules ask " \
           "a data steward"


def steward_review(spec: Pipeline) -> str:
    review = spec.data_contract.review
    return (f"only when warn rules broke: a data steward approves or rejects (Airflow human-in-the-loop); after "
            f"{review.timeout} the answer is {review.on_timeout}")


def start_run(spec: Pipeline) -> str:
    tracking = "offline: each job logs to SQLite in its own folder, which a replay task copies into the run" \
        if spec.offline_tracking else "online: the jobs log straight into the MLflow server"
    return f"create the MLflow run the jobs log into (params, dataset inputs, code version); tracking {tracking}"


def train(spec: Pipeline) -> str:
    return slurm_step(spec, "train")


def replay_train(spec: Pipeline) -> str:
    return ("copy the training job's offline MLflow store into the run (params, metrics with steps, tags, "
            "artifacts, model; idempotent), then stage the challenger and champion in S3 for the evaluation job")


def evaluate(spec: Pipeline) -> str:
    return slurm_step(spec, "evaluate") + f" Scores {', '.join(spec.evaluation.metrics)}."


def replay_evaluate(spec: Pipeline) -> str:
    return "copy the evaluation job's offline MLflow store into the run"


def gate(spec: Pipeline) -> str:
    evaluation, registry = spec.evaluation, spec.registry
    thresholds = ", ".join(f"{name} >= {bound}" for name, bound in evaluation.thresholds.items()) or "none"
    champion = (f"the challenger must beat {registry.aliases.champion} by at least {evaluation.min_improvement} on "
                f"{evaluation.primary_metric}, both scored on the same test split in the same job"
                if evaluation.compare_with_champion else "no champion comparison")
    return f"thresholds {thresholds}; {champion}"


def register(spec: Pipeline) -> str:
    registry = spec.registry
    return f"register {registry.model_name} with alias {registry.aliases.challenger}" + (
        f"; tags {json.dumps(registry.tags)}" if registry.tags else "")


def push_to_inference(spec: Pipeline) -> str:
    serving, smoke = spec.serving, spec.serving.smoke
    return (f"{serving.target} target via connection {serving.connection}: load {serving.model_name} next to the "
            f"serving version, wait until ready, smoke-test with "
            f"{'the spec inputs' if smoke.inputs else 'the model input example'}"
            + (f", outputs in {smoke.allowed_outputs}" if smoke.allowed_outputs else "")
            + (f", outputs within {smoke.output_range}" if smoke.output_range else "")
            + f"; p99 latency over {serving.latency.requests} requests <= {serving.latency.p99_ms} ms; then make it "
              f"the default and move alias {spec.registry.aliases.champion}. A failed step unloads it and tags why; "
              "skipped if not promoted")


def retire_previous_version(spec: Pipeline) -> str:
    return (f"after a grace period of {spec.serving.grace_period_s} s, unload the version the rollout replaced (kept "
            "if rolled back to)")


def end_run(spec: Pipeline) -> str:
    return ("teardown, runs however the run ended: if the MLflow run is still RUNNING once the run's Slurm jobs "
            "left the queue, end it FAILED (a task failed, a job died) or KILLED (a job was cancelled, the "
            "Airflow run was marked failed) with the reason as tag factory.end_reason")
