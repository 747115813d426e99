"""Example Airflow DAG: one batch job on the factory's Slurm cluster with ``SlurmJobOperator``.

The task defers while the job runs; every deferred Slurm task of a cluster shares one poller in
the triggerer. A retry adopts the job an earlier try submitted instead of submitting another.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from operators.slurm.operators import SlurmJobOperator

with DAG(
    dag_id="slurm_job_example",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "slurm"],
    params={"seconds": Param(5, type="integer", minimum=0, maximum=3600),
            "exit_code": Param(0, type="integer", minimum=0, maximum=255)},
    doc_md=__doc__,
):
    SlurmJobOperator(
        task_id="run_job",
        slurm_conn_id="factory_slurm_local",
        commands=[["sleep", "{{ params.seconds }}"], ["bash", "-c", "exit {{ params.exit_code }}"]],
        cpus=1, memory="128M", time_limit="00:10:00",
    )
