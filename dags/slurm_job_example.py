"""Example Airflow DAGs: one batch job on the factory's Slurm cluster with ``SlurmJobOperator``,
once per way in: ``slurm_job_example`` (slurmrestd), ``slurm_job_example_cli`` (local commands)
and ``slurm_job_example_ssh`` (a login node over SSH), and ``slurm_job_example_blocking``, which
waits in the worker instead of deferring.

The task defers while the job runs; every deferred Slurm task of a cluster shares one poller in
the triggerer, which also streams the job's output into the task log. A retry adopts the job an
earlier try submitted instead of submitting another.

Two more variants exist for fault tests: ``slurm_job_example_requeue`` lets Slurm requeue its job
once (a second requeue fails the task), and ``slurm_job_example_unreachable`` gives up after 15 s
without an answer from slurmrestd instead of the default 10 minutes. ``slurm_job_example_site_a`` and
``slurm_job_example_site_a_requeue`` run on site A of the local stack, through its login node;
``slurm_job_example_site_a_edge`` (where the EdgeExecutor is configured) runs on the Edge worker in that login
node, with the Slurm commands there. ``slurm_job_example_site_b`` and ``slurm_job_example_site_b_rest`` run
on site B, through its login node and through its slurmrestd.
"""

from __future__ import annotations

from dataclasses import dataclass

import pendulum
from airflow.sdk import DAG, Param

from operators.slurm.edge import EDGE_EXECUTOR, edge_executor_configured
from operators.slurm.operators import SlurmJobOperator


@dataclass(frozen=True)
class Variant:
    """How one example DAG reaches the cluster and waits for its job; defaults are the operator's own."""

    conn_id: str
    deferrable: bool = True
    requeue: bool = False
    max_restarts: int = 3
    unreachable_limit_s: float = 600.0
    edge_queue: str | None = None  # run by the Edge worker that takes this queue, on the site's login node


VARIANTS = {
    "slurm_job_example": Variant("factory_slurm_local"),
    "slurm_job_example_cli": Variant("factory_slurm_cli"),
    "slurm_job_example_ssh": Variant("factory_slurm_ssh"),
    # holds a worker slot while the job runs: shows crash safety through the task state store when
    # the worker itself dies
    "slurm_job_example_blocking": Variant("factory_slurm_local", deferrable=False),
    "slurm_job_example_requeue": Variant("factory_slurm_local", requeue=True, max_restarts=1),
    "slurm_job_example_unreachable": Variant("factory_slurm_local", unreachable_limit_s=15.0),
    # site A of the local stack (Slurm 22.05, two compute nodes, reached over SSH to its login node):
    # its faults are a login node off the network and a compute node whose slurmd dies
    "slurm_job_example_site_a": Variant("factory_slurm_site_a"),
    "slurm_job_example_site_a_requeue": Variant("factory_slurm_site_a", requeue=True, max_restarts=1),
    # site B (Slurm 24.11) through its login node, and through its slurmrestd with job files over SSH
    "slurm_job_example_site_b": Variant("factory_slurm_site_b"),
    "slurm_job_example_site_b_rest": Variant("factory_slurm_site_b_rest"),
}
if edge_executor_configured():
    # the Edge worker on site A's login node submits with the Slurm commands there and waits in the worker
    # (a task of a killed worker is retried and adopts its job)
    VARIANTS["slurm_job_example_site_a_edge"] = Variant("factory_slurm_site_a_local", deferrable=False,
                                                        edge_queue="site_a")

for dag_id, variant in VARIANTS.items():
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
                "time_limit": Param("00:10:00", type="string", pattern="^[0-9:-]+$"),
                "account": Param("", type="string", pattern="^[A-Za-z0-9_-]{0,64}$",
                                 description="Slurm account to charge; empty: the connection's")},
        doc_md=__doc__,
    ):
        SlurmJobOperator(
            task_id="run_job",
            slurm_conn_id=variant.conn_id,
            commands=[["bash", "-c", "for i in $(seq {{ params.seconds }}); do echo tick $i; sleep 1; done"],
                      ["python3", "-c", "x = bytearray({{ params.allocate_mb }} * 2**20); import time; "
                                        "time.sleep(1 if len(x) else 0)"],
                      ["bash", "-c", "exit {{ params.exit_code }}"]],
            cpus=1, memory="{{ params.memory }}", time_limit="{{ params.time_limit }}", poll_interval_s=1.0,
            account="{{ params.account }}",
            requeue=variant.requeue, max_restarts=variant.max_restarts,
            unreachable_limit_s=variant.unreachable_limit_s, deferrable=variant.deferrable,
            retries=0 if variant.deferrable else 2, retry_delay=pendulum.duration(seconds=1),
            **({"executor": EDGE_EXECUTOR, "queue": variant.edge_queue} if variant.edge_queue else {}),
        )
