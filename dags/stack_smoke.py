"""Smoke pipeline: one small real call to every service of the factory, from an Airflow worker.

It is what ``./factory demo`` runs until the end-to-end example pipeline exists, and it checks that
Airflow reaches S3, Slurm (as the unprivileged project user, through slurmrestd), MLflow and the
inference server through the stack's Airflow connections. Heavy libraries are imported in tasks.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from operators.slurm.operators import SlurmJobOperator

SLURM_CONN = "factory_slurm_local"


@dag(
    dag_id="stack_smoke",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["smoke", "local-stack"],
    doc_md=__doc__,
)
def stack_smoke():
    @task
    def s3_roundtrip(run_id: str | None = None) -> str:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id="factory_s3")
        key = f"smoke/{run_id}.txt"
        hook.load_string(f"written by {run_id}", key=key, bucket_name="reports", replace=True)
        if hook.read_key(key, bucket_name="reports") != f"written by {run_id}":
            raise RuntimeError(f"s3://reports/{key} did not read back what was written")
        return f"s3://reports/{key}"

    @task
    def mlflow_run(job: dict, report: str, run_id: str | None = None) -> str:
        from operators.clients import mlflow_tracking

        with mlflow_tracking("factory_mlflow"):
            import mlflow

            mlflow.set_experiment("stack-smoke")
            with mlflow.start_run(run_name=run_id) as run:
                mlflow.log_params({"slurm_job_id": job["job_id"], "slurm_user": job["user"], "report": report})
                mlflow.log_metric("slurm_elapsed_s", job["elapsed_s"])
        return run.info.run_id

    @task
    def inference_ready() -> list[dict]:
        from airflow.sdk.bases.hook import BaseHook

        from operators.serving.v2 import V2Client

        connection = BaseHook.get_connection("factory_inference")
        client = V2Client(f"{connection.schema or 'http'}://{connection.host}:{connection.port}")
        if not client.server_ready():
            raise RuntimeError(f"inference server at {client.base_url} is not ready")
        return client.repository_index()

    report = s3_roundtrip()
    job = SlurmJobOperator(
        task_id="slurm_job", slurm_conn_id=SLURM_CONN, job_name="smoke", cpus=1, memory="512M",
        time_limit="00:05:00", poll_interval_s=1.0,
        commands=[["python", "-c", "import sklearn, mlflow, getpass; "
                   "print(getpass.getuser(), sklearn.__version__, mlflow.__version__)"]])
    report >> job
    mlflow_run(job.output, report) >> inference_ready()


stack_smoke()
