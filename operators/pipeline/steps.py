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


class Step:
    """One Slurm step of a pipeline: which spec section asks for it, what it stages, runs and is given."""

    name: str

    def section(self, spec: Pipeline) -> Training | Evaluation | DataValidation:
        raise NotImplementedError

    def files(self, spec: Pipeline) -> tuple[Path, dict[str, str]]:
        """The folder staged files come from and {name in the job folder: path inside that folder}: the
        step's script under its own name, with every ``*.py`` beside it. Read without following links
        (``operators.staged_files``): nothing outside the folder reaches a job."""
        return spec.folder, script_files(spec.folder, self.section(spec).script)

    def commands(self, spec: Pipeline, refs: RunRefs) -> list[list[str]]:
        raise NotImplementedError

    def env(self, spec: Pipeline, refs: RunRefs) -> dict[str, str]:
        """The central run to log into, or the job's offline store. MLflow prints the run's address with
        emoji at the end of a run: noise in the job's log (the task links the run), boxes in some fonts."""
        where = offline_env(spec.name) if spec.offline_tracking else {"MLFLOW_RUN_ID": refs.run_id}
        return {**where, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}

    def connections(self, spec: Pipeline, mlflow_conn: str, s3_conn: str) -> tuple[str, ...]:
        """Airflow connections whose credentials reach the job (as environment variables): MLflow's only
        when the job logs online."""
        return (s3_conn,) if spec.offline_tracking else (mlflow_conn, s3_conn)

    def json_files(self, spec: Pipeline, refs: RunRefs) -> dict[str, Any]:
        raise NotImplementedError

    def setup(self, spec: Pipeline) -> list[list[str]]:
        """Before the script: the offline store (offline tracking) and the pinned inputs fetched from S3;
        offline, the evaluation's fetch also brings the models (the node cannot reach the registry)."""
        into = "." if spec.offline_tracking and self.name == "evaluate" else "data"
        fetch = ["python", "-m", "operators.jobs.fetch", "inputs.json", into]
        offline = [["python", "-m", "operators.tracking.offline", "init", STORE_DIR, "--experiment", spec.name]]
        return [*(offline if spec.offline_tracking else []), fetch]

    def script(self, spec: Pipeline) -> str:
        return (spec.folder / self.section(spec).script).name


class ValidateStep(Step):
    """Data above the contract's ``validation.cluster_above``, validated next to it; logs nothing to MLflow."""

    name = "validate"

    def section(self, spec: Pipeline) -> DataValidation:
        return spec.validation

    def files(self, spec: Pipeline) -> tuple[Path, dict[str, str]]:
        """The contract, under its own name (the name is checked against the dataset)."""
        return spec.contract_file.parent, {spec.contract_file.name: spec.contract_file.name}

    def commands(self, spec: Pipeline, refs: RunRefs) -> list[list[str]]:
        return [["python", "-m", "operators.contracts.job", "pinned.json", spec.contract_file.name,
                 "--dag-id", spec.dag_id, "--run-id", refs.airflow_run_id]]

    def env(self, spec: Pipeline, refs: RunRefs) -> dict[str, str]:
        return {}

    def connections(self, spec: Pipeline, mlflow_conn: str, s3_conn: str) -> tuple[str, ...]:
        return (s3_conn,)

    def json_files(self, spec: Pipeline, refs: RunRefs) -> dict[str, Any]:
        return {"pinned.json": refs.pinned}


class TrainStep(Step):
    name = "train"

    def section(self, spec: Pipeline) -> Training:
        return spec.training

    def commands(self, spec: Pipeline, refs: RunRefs) -> list[list[str]]:
        return [*self.setup(spec), ["python", self.script(spec), "--data-dir", "data", "--params", "params.json"]]

    def json_files(self, spec: Pipeline, refs: RunRefs) -> dict[str, Any]:
        return {"inputs.json": refs.train_inputs, "params.json": refs.params}


class EvaluateStep(Step):
    """The challenger and the champion, scored on the held-out split in the same job."""

    name = "evaluate"

    def section(self, spec: Pipeline) -> Evaluation:
        return spec.evaluation

    def commands(self, spec: Pipeline, refs: RunRefs) -> list[list[str]]:
        if spec.offline_tracking:
            challenger, champion = OFFLINE_MODELS["challenger"], OFFLINE_MODELS["champion"]
        else:
            challenger = f"runs:/{refs.run_id}/model"
            champion = f"models:/{spec.registry.model_name}@{spec.registry.aliases.champion}"
        return [*self.setup(spec), ["python", self.script(spec), "--data-dir", "data", "--challenger", challenger,
                                    *(["--champion", champion] if spec.evaluation.compare_with_champion else []),
                                    "--output", "evaluation.json"]]

    def json_files(self, spec: Pipeline, refs: RunRefs) -> dict[str, Any]:
        return {"inputs.json": refs.evaluate_inputs if spec.offline_tracking else refs.test_inputs}


STEP_KINDS: dict[str, Step] = {step.name: step for step in (ValidateStep(), TrainStep(), EvaluateStep())}


def step_of(name: str) -> Step:
    """The step called ``name``; unknown names fail listing the valid ones."""
    if name not in STEP_KINDS:
        raise ValueError(f"unknown step {name!r}: choose one of {', '.join(STEP_KINDS)}")
    return STEP_KINDS[name]


def step_spec(spec: Pipeline, step: str) -> Training | Evaluation | DataValidation:
    return step_of(step).section(spec)


def step_files(spec: Pipeline, step: str) -> tuple[Path, dict[str, str]]:
    return step_of(step).files(spec)


def step_commands(spec: Pipeline, step: str, refs: RunRefs) -> list[list[str]]:
    return step_of(step).commands(spec, refs)


def step_env(spec: Pipeline, step: str, refs: RunRefs) -> dict[str, str]:
    return step_of(step).env(spec, refs)


def step_connections(spec: Pipeline, step: str, mlflow_conn: str, s3_conn: str) -> tuple[str, ...]:
    return step_of(step).connections(spec, mlflow_conn, s3_conn)


def step_json_files(spec: Pipeline, step: str, refs: RunRefs) -> dict[str, Any]:
    return step_of(step).json_files(spec, refs)


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
