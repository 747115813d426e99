"""A pipeline's Slurm steps (validate, train, evaluate) for a site: files, commands, the site's request.

One place for the DAG (which passes these to ``SlurmJobOperator``) and ``factory render``/``plan`` (which
show the batch script the task will submit). Imports no Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.sites.catalogue import Site
from operators.sites.request import account_value, gpu_directives
from operators.slurm.script import BatchJob, ContainerRun, batch_job
from operators.spec import Container, DataValidation, Evaluation, Pipeline, Training, script_files
from operators.tracking.offline import STORE_DIR, offline_env

STEPS = ("validate", "train", "evaluate")  # validate: only for data above the contract's size threshold


@dataclass(frozen=True)
class RunRefs:
    """How a step refers to values only known when the run starts: Jinja in the DAG, placeholders in renders."""

    run_id: str
    train_inputs: Any
    test_inputs: Any
    params: Any
    pinned: Any = None
    airflow_run_id: str = "{{ run_id }}"
    evaluate_inputs: Any = None  # offline tracking: the test split and the models the replay task staged


PLACEHOLDERS = RunRefs(run_id="<mlflow-run-id>", train_inputs="<pinned train split>",
                       test_inputs="<pinned test split>", params="<training.params + run overrides>",
                       pinned="<pinned dataset version>", airflow_run_id="<run_id>",
                       evaluate_inputs="<pinned test split + challenger and champion staged in S3>")
OFFLINE_MODELS = {"challenger": "models/challenger", "champion": "models/champion"}  # fetched by the evaluate job


def step_spec(spec: Pipeline, step: str) -> Training | Evaluation | DataValidation:
    return {"validate": spec.validation, "train": spec.training, "evaluate": spec.evaluation}[step]


def container_run(site: Site, container: Container | None, gpus_per_node: int) -> ContainerRun | None:
    """The site's first container runtime; ``--nv``/``--rocm`` by GPU maker for Apptainer/Singularity."""
    if container is None:
        return None
    runtime = (site.containers.runtimes or [None])[0]
    if runtime is None:  # the spec check refuses this; a clear error if called anyway
        raise ValueError(f"{site.title} has no known container runtime")
    model = site.node.gpu_model.upper()
    gpu_flag = ("--rocm" if "AMD" in model else "--nv" if "NVIDIA" in model else None) if gpus_per_node else None
    return ContainerRun(runtime=runtime, image=container.image, gpu_flag=gpu_flag)


def job_options(spec: Pipeline, step: str, site: Site) -> dict[str, Any]:
    """SlurmJobOperator arguments for one step on one site (everything but files and connections)."""
    job = step_spec(spec, step)
    resources = job.resources
    launcher = job.launcher
    tasks_per_node, procs_per_node, cpus = resources.slurm_tasks(launcher)
    account = account_value(site, resources.account) if resources.account else None
    return {
        "nodes": resources.nodes,
        "tasks_per_node": tasks_per_node, "procs_per_node": procs_per_node, "cpus": cpus,
        "memory": resources.memory, "time_limit": str(resources.time),
        "partition": resources.partition or site.default_partition(),
        "qos": resources.qos, "account": account, "gpus": resources.gpus_per_node,
        "gpu_directives": tuple(gpu_directives(site, resources.gpus_per_node)) if resources.gpus_per_node else None,
        "launcher": launcher, "container": container_run(site, job.container, resources.gpus_per_node),
        "environment": job.environment,
    }


def step_files(spec: Pipeline, step: str) -> tuple[Path, dict[str, str]]:
    """The folder staged files come from and {name in the job folder: path inside that folder}: the step's
    script under its own name, with every ``*.py`` beside it; the validation job gets the contract. They are
    read without following links (``operators.staged_files``): nothing outside the folder reaches a job."""
    if step == "validate":  # the contract's name is checked against the dataset
        return spec.contract_file.parent, {spec.contract_file.name: spec.contract_file.name}
    return spec.folder, script_files(spec.folder, step_spec(spec, step).script)


def step_commands(spec: Pipeline, step: str, refs: RunRefs) -> list[list[str]]:
    if step == "validate":
        return [["python", "-m", "operators.contracts.job", "pinned.json", spec.contract_file.name,
                 "--dag-id", spec.dag_id, "--run-id", refs.airflow_run_id]]
    job = step_spec(spec, step)
    script = (spec.folder / job.script).name
    # offline tracking: the fetch step also brings the models (the node cannot reach the registry)
    fetch = ["python", "-m", "operators.jobs.fetch", "inputs.json", "." if spec.offline_tracking and
             step == "evaluate" else "data"]
    offline = [["python", "-m", "operators.tracking.offline", "init", STORE_DIR, "--experiment", spec.name]]
    setup = [*(offline if spec.offline_tracking else []), fetch]
    if step == "train":
        return [*setup, ["python", script, "--data-dir", "data", "--params", "params.json"]]
    if spec.offline_tracking:
        challenger, champion = OFFLINE_MODELS["challenger"], OFFLINE_MODELS["champion"]
    else:
        challenger = f"runs:/{refs.run_id}/model"
        champion = f"models:/{spec.registry.model_name}@{spec.registry.aliases.champion}"
    return [*setup, ["python", script, "--data-dir", "data", "--challenger", challenger,
                     *(["--champion", champion] if spec.evaluation.compare_with_champion else []),
                     "--output", "evaluation.json"]]


def step_env(spec: Pipeline, step: str, refs: RunRefs) -> dict[str, str]:
    """Variables a step's job gets: the central run to log into, or the job's offline store. The
    validation job logs nothing to MLflow."""
    if step == "validate":
        return {}
    return offline_env(spec.name) if spec.offline_tracking else {"MLFLOW_RUN_ID": refs.run_id}


def step_connections(spec: Pipeline, step: str, mlflow_conn: str, s3_conn: str) -> tuple[str, ...]:
    """Airflow connections whose credentials reach the job (as environment variables): MLflow's only
    when the job logs online."""
    return (s3_conn,) if step == "validate" or spec.offline_tracking else (mlflow_conn, s3_conn)


def step_json_files(spec: Pipeline, step: str, refs: RunRefs) -> dict[str, Any]:
    if step == "validate":
        return {"pinned.json": refs.pinned}
    if step == "train":
        return {"inputs.json": refs.train_inputs, "params.json": refs.params}
    return {"inputs.json": refs.evaluate_inputs if spec.offline_tracking else refs.test_inputs}


def preview(spec: Pipeline, step: str, site: Site) -> BatchJob:
    """The job as ``factory render`` shows it: the run's values and the connection's folders as placeholders."""
    options = job_options(spec, step, site)
    if options["account"] is None:  # the connection's account at run time; the site's example here
        project = site.account.default or site.account.example or "<project>"
        options["account"] = site.account.template.replace("{project}", project)
    workdir = f"<job_workdir>/{spec.dag_id}/<run_id>/{step}.-1.try1"
    settings = {"job_runtime": "<environments>/job-runtime"}
    return batch_job(name=f"{spec.dag_id}.{step}"[:64], workdir=workdir, settings=settings,
                     comment=f"airflow:{spec.dag_id}/<run_id>/{step}/-1",
                     commands=step_commands(spec, step, PLACEHOLDERS), **options)
