"""``slurm_job_sweep``: one Slurm job per item of a list (a parameter sweep), as mapped tasks.

All of the sweep's jobs wait deferred on the same per-cluster poller in the triggerer: a sweep of
200 costs slurmctld one status call per interval, not 200. Each mapped task has its own identity
(``airflow:dag/run/task/<map index>``), so a retry adopts its own job and no other.
``bench/slurm_triggerer_load.py`` uses it to measure the real triggerer with many deferred tasks.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from operators.slurm.operators import SlurmJobOperator

with DAG(
    dag_id="slurm_job_sweep",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "slurm"],
    params={"count": Param(4, type="integer", minimum=1, maximum=1000),
            "seconds": Param(5, type="integer", minimum=0, maximum=3600)},
    doc_md=__doc__,
):

    @task
    def sweep_points(params: dict | None = None) -> list[list[list[str]]]:
        """One job's commands per point of the sweep."""
        assert params is not None
        return [[["bash", "-c", f"echo point {point}; sleep {int(params['seconds'])}"]]
                for point in range(int(params["count"]))]

    SlurmJobOperator.partial(
        task_id="run_point", slurm_conn_id="factory_slurm_local", cpus=1, memory="64M", time_limit="01:00:00",
        poll_interval_s=2.0,
    ).expand(commands=sweep_points())
