"""``slurm_job_reconciler``: cancels Slurm jobs whose Airflow task has ended.

A task's own trigger cancels its job when the task is marked failed or succeeded, cleared, or its
run is cancelled; this DAG is the safety net for the moment no triggerer runs that trigger (the
task had just deferred, or the triggerer was down). It runs continuously, one deferred task per
Slurm connection in ``[factory] slurm_reconcile_connections``; each waits in the triggerer for an
hour, riding on the cluster's shared poller, then the next run takes over.
"""

from __future__ import annotations

import pendulum
from airflow.configuration import conf
from airflow.sdk import DAG

from operators.slurm.operators import SlurmJobReconcilerOperator

CONNECTIONS = [name.strip() for name in
               conf.get("factory", "slurm_reconcile_connections", fallback="factory_slurm_local").split(",")
               if name.strip()]

with DAG(
    dag_id="slurm_job_reconciler",
    schedule="@continuous",
    max_active_runs=1,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["slurm", "maintenance"],
    doc_md=__doc__,
):
    for conn_id in CONNECTIONS:
        SlurmJobReconcilerOperator(task_id=f"reconcile_{conn_id}", slurm_conn_id=conn_id, check_interval_s=10.0,
                                   run_for_s=3600.0, retries=3, retry_delay=pendulum.duration(seconds=10))
