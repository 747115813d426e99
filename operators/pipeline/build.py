"""Build one Airflow DAG from one pipeline spec: validate → train → evaluate → gate → register → push."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from operators.pipeline import tasks
from operators.pipeline.links import MlflowRunLink, ModelVersionLink, ValidationReportLink
from operators.slurm.operators import SlurmJobOperator
from operators.spec import PipelineSpec

RUN = "ti.xcom_pull(task_ids='start_run')"


class ValidateDataOperator(PythonOperator):
    operator_extra_links = (ValidationReportLink(),)


class MlflowRunOperator(PythonOperator):
    operator_extra_links = (MlflowRunLink(),)


class RegisterModelOperator(PythonOperator):
    operator_extra_links = (ModelVersionLink(),)


def _python(cls: type[PythonOperator], task_id: str, function, spec: PipelineSpec, **kwargs: Any) -> PythonOperator:
    return cls(task_id=task_id, python_callable=function, op_kwargs={"spec": spec}, **kwargs)


def build_dag(spec: PipelineSpec) -> DAG:
    resources_train, resources_eval = spec.training.resources, spec.evaluation.resources
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description,
        schedule=spec.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=["pipeline", spec.name, spec.site],
        default_args={"owner": ",".join(spec.owners), "retries": 0},
        params={
            "revision": Param(spec.dataset.revision, type="string",
                              description="dataset revision (tag or commit) in the dataset registry"),
            "train_params": Param({}, type="object", description="overrides of training.params for this run"),
        },
        doc_md=f"**{spec.name}**: {spec.description}\n\nSpec: `{spec.folder / 'pipeline.yaml'}`",
    ) as dag:
        pin = _python(PythonOperator, "pin_dataset", tasks.pin_dataset, spec)
        validate = _python(ValidateDataOperator, "validate_data", tasks.validate_data, spec)
        start = _python(MlflowRunOperator, "start_run", tasks.start_run, spec)
        train = SlurmJobOperator(
            task_id="train", slurm_conn_id=spec.site,
            files={"train.py": str(spec.folder / spec.training.script)},
            json_files={"inputs.json": f"{{{{ {RUN}['train_inputs'] }}}}",
                        "params.json": f"{{{{ {RUN}['params'] }}}}"},
            env={"MLFLOW_RUN_ID": f"{{{{ {RUN}['run_id'] }}}}"},
            env_connections=(tasks.MLFLOW_CONN, tasks.S3_CONN),
            commands=[["python", "-m", "operators.jobs.fetch", "inputs.json", "data"],
                      ["python", "train.py", "--data-dir", "data", "--params", "params.json"]],
            cpus=resources_train.cpus, memory=resources_train.memory, time_limit=resources_train.time,
            partition=resources_train.partition, gpus=resources_train.gpus)
        evaluate = SlurmJobOperator(
            task_id="evaluate", slurm_conn_id=spec.site,
            files={"evaluate.py": str(spec.folder / spec.evaluation.script)},
            json_files={"inputs.json": f"{{{{ {RUN}['test_inputs'] }}}}"},
            env={"MLFLOW_RUN_ID": f"{{{{ {RUN}['run_id'] }}}}"},
            env_connections=(tasks.MLFLOW_CONN, tasks.S3_CONN),
            commands=[["python", "-m", "operators.jobs.fetch", "inputs.json", "data"],
                      ["python", "evaluate.py", "--data-dir", "data",
                       "--challenger", f"runs:/{{{{ {RUN}['run_id'] }}}}/model",
                       "--champion", f"models:/{spec.registry.model_name}@champion",
                       "--output", "evaluation.json"]],
            cpus=resources_eval.cpus, memory=resources_eval.memory, time_limit=resources_eval.time,
            partition=resources_eval.partition, gpus=resources_eval.gpus)
        decide = _python(PythonOperator, "gate", tasks.gate, spec)
        register = _python(RegisterModelOperator, "register", tasks.register, spec)
        push = _python(PythonOperator, "push_to_inference", tasks.push_to_inference, spec)
        pin >> validate >> start >> train >> evaluate >> decide >> register >> push
    return dag
