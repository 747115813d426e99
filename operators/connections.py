"""Connection ids, buckets and each pipeline's job credentials: the names tasks, jobs and the stack share.

The orchestrator's own connections (``factory_s3``, ``factory_mlflow``) can do everything its tasks do. A
Slurm job never gets them: it gets its pipeline's job connections, whose credentials can read the pinned
inputs and write only the pipeline's own outputs (``job_s3_actions`` for S3; EDIT on the pipeline's own
MLflow experiment and READ on its registered model, granted by ``start_run``). SECURITY.md has the whole
picture. Imports nothing heavy: specs and the stack use it.
"""

from __future__ import annotations

from dataclasses import dataclass

S3_CONN = "factory_s3"
MLFLOW_CONN = "factory_mlflow"
REPORTS_BUCKET = "reports"
STAGING_BUCKET = "job-staging"  # models for offline evaluation jobs, removed when the run's evaluation is replayed
VALIDATION_PREFIX = "validation"  # reports/validation/<dataset>/<revision>/<run>/


@dataclass(frozen=True)
class JobConnections:
    """A pipeline's job credentials: Airflow connections whose secrets reach its Slurm jobs."""

    s3: str
    mlflow: str


def job_connections(pipeline: str) -> JobConnections:
    return JobConnections(s3=f"factory_s3_job_{pipeline}", mlflow=f"factory_mlflow_job_{pipeline}")


def job_s3_actions(dag_id: str, dataset: str, datasets_bucket: str) -> list[str]:
    """What a pipeline's jobs may do in S3 (SeaweedFS ``Action:bucket/prefix/*`` form; an IAM policy says the
    same): read and list the dataset store (content-addressed by md5: nothing narrower names one dataset, and
    nothing there is writable), read the models staged for the pipeline's offline evaluation, and write the
    validation reports of the pipeline's own dataset. Nothing else: no other pipeline's prefix, no MLflow
    artifact store (artifacts go through the MLflow server, which checks the job's experiment permission)."""
    staging = f"{STAGING_BUCKET}/{dag_id}/*"
    reports = f"{REPORTS_BUCKET}/{VALIDATION_PREFIX}/{dataset}/*"
    return [f"Read:{datasets_bucket}", f"List:{datasets_bucket}", f"Read:{staging}", f"List:{staging}",
            f"Read:{reports}", f"Write:{reports}", f"List:{reports}"]
