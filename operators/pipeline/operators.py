"""The pipeline's own operators: Python tasks with their extra links, and a Slurm step whose files, commands
and environment are the step's, computed from the upstream tasks' records when the task runs."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator

from operators.connections import job_connections
from operators.pipeline.links import MlflowRunLink, ModelVersionLink, ValidationReportLink
from operators.pipeline.steps import (
    PLACEHOLDERS,
    RunRefs,
    job_options,
    step_commands,
    step_connections,
    step_env,
    step_files,
    step_json_files,
)
from operators.records import Replayed, TrackingRun
from operators.slurm.edge import edge_executor_configured, edge_task_options
from operators.slurm.operators import SlurmJobOperator
from operators.spec import Pipeline


class ValidateDataOperator(BranchPythonOperator):
    operator_extra_links = (ValidationReportLink(),)


class ApplyContractOperator(PythonOperator):
    operator_extra_links = (ValidationReportLink(),)


class MlflowRunOperator(PythonOperator):
    operator_extra_links = (MlflowRunLink(),)


class RegisterModelOperator(PythonOperator):
    operator_extra_links = (ModelVersionLink(),)


def run_refs(upstream: dict[str, Any], airflow_run_id: str) -> RunRefs:
    """The step's run values from its upstream records: the MLflow run, the pinned dataset, the staged models."""
    run = TrackingRun.of(upstream["run"]) if upstream.get("run") else None
    replayed = Replayed.of(upstream["replayed"]) if upstream.get("replayed") else None
    return RunRefs(run_id=run.run_id if run else "", train_inputs=run.train_inputs if run else None,
                   test_inputs=run.test_inputs if run else None, params=run.params if run else None,
                   pinned=upstream.get("pinned"), airflow_run_id=airflow_run_id,
                   evaluate_inputs=replayed.evaluate_inputs if replayed else None)


class PipelineJobOperator(SlurmJobOperator):
    """One Slurm step of a pipeline (``validate``, ``train``, ``evaluate``) on the spec's site, with the
    pipeline's own job credentials (never the orchestrator's). ``upstream`` holds XComArgs of the records it
    needs (``run``, ``pinned``, ``replayed``); once Airflow has rendered them, the step's commands, input
    files and environment are computed from them, so the task's rendered fields show what the job got."""

    template_fields = (*SlurmJobOperator.template_fields, "upstream")

    def __init__(self, *, spec: Pipeline, step: str, upstream: dict[str, Any], **kwargs: Any) -> None:
        files_root, files = step_files(spec, step)
        jobs = job_connections(spec.name)
        edge = spec.edge_route if edge_executor_configured() else None
        route = {"slurm_conn_id": edge.connection, **edge_task_options(edge.queue)} if edge else {
            "slurm_conn_id": spec.connection}
        super().__init__(**route, files=files, files_root=str(files_root),
                         env_connections=step_connections(spec, step, jobs.mlflow, jobs.s3),
                         commands=step_commands(spec, step, PLACEHOLDERS), **job_options(spec, step, spec.site_facts),
                         **kwargs)
        self.spec, self.step, self.upstream = spec, step, upstream

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        refs = run_refs(self.upstream, context["run_id"])
        self.commands = step_commands(self.spec, self.step, refs)
        self.json_files = step_json_files(self.spec, self.step, refs)
        self.env = step_env(self.spec, self.step, refs)
