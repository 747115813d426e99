"""Build one Airflow DAG from one pipeline spec: validate → (steward) → train → evaluate → gate → register →
roll out → retire the previous version."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param, TriggerRule

from operators.connections import REPORTS_BUCKET, S3_CONN
from operators.datasets.assets import dataset_asset
from operators.pipeline import run_end, task_docs, tasks
from operators.pipeline.operators import (
    ApplyContractOperator,
    MlflowRunOperator,
    PipelineJobOperator,
    RegisterModelOperator,
    ValidateDataOperator,
)
from operators.pipeline.review import StewardReviewOperator
from operators.run_parameters import REVISION
from operators.serving import tasks as serving
from operators.spec import Pipeline, SpecError
from operators.typed_yaml import Problem


def _python(cls: type[PythonOperator], task_id: str, function, spec: Pipeline, inputs: dict[str, Any] | None = None,
            **kwargs: Any) -> PythonOperator:
    """A Python task of the pipeline: ``inputs`` are the upstream records it reads (XComArgs)."""
    return cls(task_id=task_id, python_callable=function, op_kwargs={"spec": spec, **(inputs or {})},
               doc_md=getattr(task_docs, task_id)(spec), **kwargs)


def _slurm(spec: Pipeline, step: str, task_id: str, **upstream: Any) -> PipelineJobOperator:
    return PipelineJobOperator(task_id=task_id, spec=spec, step=step, upstream=upstream,
                               doc_md=getattr(task_docs, task_id)(spec))


def _schedule(spec: Pipeline) -> Any:
    """Cron, a new dataset version (the dataset's Asset, which ``dataset_registry_watch`` updates for each
    new registry tag), or manual runs only."""
    if spec.schedule is None:
        return None
    if spec.schedule.dataset_version:
        return [dataset_asset(spec.dataset)]
    return spec.schedule.cron


def _notifier(spec: Pipeline) -> dict[str, Any]:
    """E-mail on the events the spec lists, through Airflow's SMTP connection ``smtp_default``."""
    if not spec.notifications.email:
        return {}
    from operators.pipeline.notifications import PipelineMailNotifier

    callbacks = {}
    for event in spec.notifications.events:
        callbacks[f"on_{event}_callback"] = PipelineMailNotifier(
            to=spec.notifications.email, subject=f"[{spec.dag_id}] {{{{ ti.task_id }}}}: {event}",
            html_content=f"Pipeline {spec.name}, run {{{{ run_id }}}}, task {{{{ ti.task_id }}}}: {event}.")
    return callbacks


class PipelineSpecErrors(DAG):
    """Not a DAG to run: the messenger of the specs that failed to load.

    Airflow validates each DAG a file defines before keeping it (``DAG.validate``) and records a failure as
    the file's import error, as ``ErrorType: message`` without a traceback. This one always fails, with every
    bad spec's errors (file:line: field: message). It lives in its own file (``dags/pipeline_spec_errors.py``):
    Airflow marks every DAG of a file with an import error stale, so the good pipelines come from another.
    """

    spec_errors: SpecError

    def validate(self) -> None:
        raise self.spec_errors


def spec_errors_dag(failed: dict[Any, SpecError]) -> DAG:
    problems = [problem for error in failed.values() for problem in error.problems]
    files = ", ".join(sorted(str(path) for path in failed))
    messenger = PipelineSpecErrors(dag_id="pipeline_specs_with_errors", schedule=None,
                                   description=f"{len(failed)} pipeline spec(s) with errors: {files}")
    messenger.spec_errors = SpecError([Problem(None, None, None, f"{len(failed)} pipeline spec(s) with errors; "
                                               "their DAGs are not built, the other pipelines run:"), *problems])
    return messenger


def _known_keys(keys: list[str]) -> dict[str, Any]:
    """JSON schema: only these keys (the trigger form and the REST API refuse others before a run exists)."""
    return {"propertyNames": {"enum": keys}} if keys else {"maxProperties": 0}


def build_dag(spec: Pipeline) -> DAG:
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description,
        schedule=_schedule(spec),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=["pipeline", spec.name, f"site:{spec.site}"],
        default_args={"owner": ",".join(spec.owners), "retries": 0, **_notifier(spec)},
        params={
            "revision": Param(spec.dataset.revision, type="string", pattern=f"^{REVISION}$",
                              description="dataset revision (tag or commit) in the dataset registry"),
            "train_params": Param({}, type="object", **_known_keys(sorted(spec.training.params)),
                                  description="overrides of training.params for this run "
                                              f"(keys: {', '.join(sorted(spec.training.params)) or 'none'})"),
            # validate_on (auto, worker or cluster) is a conf key without a Param: every Param is schema-checked
            # once per task at parse time, and a third one cost the dag-processor ~0.3 s per 50 pipelines
        },
        doc_md=f"**{spec.name}**: {spec.description}\n\nSpec: `{spec.file}`; site `{spec.site}` through "
               f"connection `{spec.connection}`. See the jobs with `./factory render {spec.name}`.",
    ) as dag:
        pin = _python(PythonOperator, "pin_dataset", tasks.pin_dataset, spec, inlets=[dataset_asset(spec.dataset)])
        validate = _python(ValidateDataOperator, "validate_data", tasks.validate_data, spec, {"pinned": pin.output})
        validate_on_cluster = _slurm(spec, "validate", "validate_data_on_cluster", pinned=pin.output)
        apply_contract = _python(ApplyContractOperator, "apply_contract", tasks.apply_contract, spec,
                                 {"pinned": pin.output}, trigger_rule="none_failed_min_one_success")
        validate >> [validate_on_cluster, apply_contract]  # a branch: one of the two validates
        validate_on_cluster >> apply_contract
        review = StewardReviewOperator(task_id="steward_review", spec=spec, validation=apply_contract.output,
                                       reports_bucket=REPORTS_BUCKET, s3_conn_id=S3_CONN,
                                       doc_md=task_docs.steward_review(spec))
        start = _python(MlflowRunOperator, "start_run", tasks.start_run, spec, {
            "pinned": pin.output, "validation": apply_contract.output, "review": review.output})
        train = _slurm(spec, "train", "train", run=start.output)
        if spec.offline_tracking:  # the jobs logged into their own stores: copy them into the server's run
            replay_train = _python(MlflowRunOperator, "replay_train", tasks.replay_train, spec,
                                   {"run": start.output, "train": train.output})
            evaluate = _slurm(spec, "evaluate", "evaluate", run=start.output, replayed=replay_train.output)
            replay_evaluate = _python(MlflowRunOperator, "replay_evaluate", tasks.replay_evaluate, spec,
                                      {"run": start.output, "evaluate": evaluate.output})
        else:
            evaluate = _slurm(spec, "evaluate", "evaluate", run=start.output)
            train >> evaluate  # it scores the model train logged into the run
        decide = _python(PythonOperator, "gate", tasks.gate, spec,
                         {"run": start.output, "train": train.output, "evaluate": evaluate.output})
        if spec.offline_tracking:
            replay_evaluate >> decide
        register = _python(RegisterModelOperator, "register", tasks.register, spec, {
            "run": start.output, "verdict": decide.output, "validation": apply_contract.output})
        push = _python(PythonOperator, "push_to_inference", serving.push_to_inference, spec,
                       {"registered": register.output})
        retire = serving.RetirePreviousVersionOperator(task_id="retire_previous_version", spec=spec,
                                                       rollout=push.output,
                                                       doc_md=task_docs.retire_previous_version(spec))
        # the run's only leaf: ends the MLflow run whatever happened, and its state is the run's verdict
        end = _python(PythonOperator, "end_run", run_end.end_run, spec, on_failure_callback=None)
        retire >> end.as_teardown(setups=start, on_failure_fail_dagrun=True)
        end.trigger_rule = TriggerRule.ALL_DONE  # also when start_run never ran (a contract stopped the run)
    return dag
