"""Example Airflow DAGs: one batch job on the factory's Slurm cluster with ``SlurmJobOperator``,
once per way in: ``slurm_job_example`` (slurmrestd), ``slurm_job_example_cli`` (local commands)
and ``slurm_job_example_ssh`` (a login node over SSH), and ``slurm_job_example_blocking``, which
waits in the worker instead of deferring.

The task defers while the job runs; every deferred Slurm task of a cluster shares one poller in
the triggerer, which also streams the job's output into the task log. A retry adopts the job an
earlier try submitted instead of submitting another.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from operators.slurm.operators import SlurmJobOperator

# dag id: (connection, deferrable). The blocking variant holds a worker slot while the job runs:
# it shows crash safety through the task state store when the worker itself dies.
VARIANTS = {"slurm_job_example": ("factory_slurm_local", True), "slurm_job_example_cli": ("factory_slurm_cli", True),
            "slurm_job_example_ssh": ("factory_slurm_ssh", True),
            "slurm_job_example_blocking": ("factory_slurm_local", False)}

for dag_id, (conn_id, deferrable) in VARIANTS.items():
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["example", "slurm"],
        params={"seconds": Param(5, type="integer", minimum=0, maximum=3600),
                "exit_code": Param(0, type="integer", minimum=0, maximum=255),
                "memory": Param("128M", type="string", pattern="^[0-9]+[KMG]?$"),
                "allocate_mb": Param(0, type="integer", minimum=0, maximum=4096),
                "time_limit": Param("00:10:00", type="string", pattern="^[0-9:-]+$")},
        doc_md=__doc__,
    ):
        SlurmJobOperator(
            task_id="run_job",
            slurm_conn_id=conn_id,
            commands=[["bash", "-c", "for i in $(seq {{ params.seconds }}); do echo tick $i; sleep 1; done"],
                      ["python3", "-c", "x = bytearray({{ params.allocate_mb }} * 2**20); import time; "
                                        "time.sleep(1 if len(x) else 0)"],
                      ["bash", "-c", "exit {{ params.exit_code }}"]],
            cpus=1, memory="{{ params.memory }}", time_limit="{{ params.time_limit }}", poll_interval_s=1.0,
            deferrable=deferrable, retries=0 if deferrable else 2, retry_delay=pendulum.duration(seconds=1),
        )
