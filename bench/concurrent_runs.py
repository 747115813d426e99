"""20 runs at once across both sites (production profile) next to one run alone, in the same session.

First one run of ``slurm_job_example_site_b`` alone, then ``BENCH_RUNS`` (20) at once, spread over the four
ways into the sites (site A's Edge worker, site A over SSH, site B over SSH, site B through slurmrestd), each
a job of ``BENCH_JOB_S`` (30) seconds. Per run, the orchestration overhead is the run's wall time (start to
end, as Airflow records them) minus the time its job was in Slurm's hands (sacct Submit to End: a job
pending behind others on a full site is the cluster's capacity, not orchestration): task start, staging,
submission, noticing the end, accounting. Goal: the mean overhead under load <= 1.5 x the single run's.

Also: the wall time of the 20; the scheduler's pass latency (each task's ``scheduled_when`` -> ``queued_when``:
the scheduler queues scheduled tasks once per loop, so this is the loop as tasks feel it; Airflow's own loop
timer is a statsd metric, not available without a statsd server); the peak number of connections to
Airflow's PostgreSQL database (``pg_stat_activity``, sampled every second); and the job-info RPCs each
site's slurmctld counted per poll interval (``sdiag``), next to the number of hosts that wait on it. Prints one
JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from datetime import datetime

from stack.airflow_api import AirflowAPI
from stack.clusters.site import SITE_A, SITE_B
from stack.manager import Stack
from stack.services.postgres import PostgreSQL
from stack.settings import StackPaths, StackSecrets

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
JOB_S = int(os.environ.get("BENCH_JOB_S", "30"))
TASK_ID = "run_job"
WAYS = {"slurm_job_example_site_a_edge": SITE_A, "slurm_job_example_site_a": SITE_A,
        "slurm_job_example_site_b": SITE_B, "slurm_job_example_site_b_rest": SITE_B}
SINGLE = "slurm_job_example_site_b"
GOAL_RATIO = 1.5
POLL_INTERVAL_S = 1.0  # the example DAGs' poll_interval_s
# the hosts that wait on each site, each one status call per interval (operators/slurm/shared_status.py):
# site A from the Airflow host (SSH) and its login node (Edge worker), site B from the Airflow host only
WAITING_HOSTS = {"site_a": 2, "site_b": 1}


def when(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def in_slurm_s(cluster, comment: str) -> float:
    """Seconds the job spent in Slurm's hands, submit to end (pending included: with 10 jobs on a site of 4
    CPUs, jobs wait for each other, which is the cluster's capacity, not orchestration), from accounting."""
    out = cluster.checked_on(cluster.site.ctl, ["sacct", "-X", "-n", "-P", "--starttime", "now-1days",
                                                "-o", "Comment,Submit,End,State"], "sacct")
    rows = [line.split("|") for line in out.splitlines() if line.startswith(comment + "|")]
    if len(rows) != 1 or rows[0][3] != "COMPLETED":
        raise SystemExit(f"{comment}: expected one COMPLETED job, accounting has {rows}")
    return (datetime.fromisoformat(rows[0][2]) - datetime.fromisoformat(rows[0][1])).total_seconds()


class ConnectionSampler(threading.Thread):
    """The peak number of connections to Airflow's database, sampled every second."""

    def __init__(self, paths: StackPaths) -> None:
        super().__init__(daemon=True)
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(PostgreSQL(paths, StackSecrets(paths)).url("postgres"))
        self.query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = 'airflow'")
        self.peak, self.stopped = 0, threading.Event()

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self.stopped.wait(1.0):
                self.peak = max(self.peak, int(connection.execute(self.query).scalar()))


def job_info_rpcs(stack: Stack) -> dict[str, int]:
    """slurmctld's job-info RPC counts (sdiag) on each site."""
    return {site.site.name: site.job_info_rpcs() for site in stack.factory.sites}


def run_all(api: AirflowAPI, stack: Stack, dags: list[str]) -> tuple[list[dict], float]:
    """Trigger ``dags`` at once; per run its overhead, task times; and the wall time of all of them."""
    started = []
    began = time.time()
    for number, dag in enumerate(dags):
        run_id = f"bench-{number}-{uuid.uuid4().hex[:8]}"
        api.trigger(dag, {"seconds": JOB_S, "exit_code": 0}, run_id=run_id)
        started.append((dag, run_id))
    results = []
    for dag, run_id in started:
        run = api.wait_for_run(dag, run_id, timeout_s=1800)
        if run["state"] != "success":
            raise SystemExit(f"{dag}/{run_id} ended {run['state']}")
        ti = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK_ID}")
        cluster = next(site for site in stack.factory.sites if site.site.name == WAYS[dag].name)
        job_s = in_slurm_s(cluster, f"airflow:{dag}/{run_id}/{TASK_ID}/-1")
        results.append({"dag": dag, "overhead_s": when(run["end_date"]) - when(run["start_date"]) - job_s,
                        "pass_s": when(ti["queued_when"]) - when(ti["scheduled_when"])})
    return results, time.time() - began


def main() -> None:
    paths = StackPaths.from_env()
    if paths.profile() != "production":
        raise SystemExit("Celery and the Edge worker run on the production profile: "
                         "./factory stack up --profile production")
    stack = Stack(paths)
    api = AirflowAPI.of_stack(json.loads(paths.info_file.read_text()))
    for dag in WAYS:
        api.wait_for_dag(dag)
    [single], _ = run_all(api, stack, [SINGLE])
    sampler = ConnectionSampler(paths)
    sampler.start()
    ways = list(WAYS)
    rpcs_before = job_info_rpcs(stack)
    many, wall = run_all(api, stack, [ways[number % len(ways)] for number in range(RUNS)])
    rpcs = {name: round((count - rpcs_before[name]) / (wall / POLL_INTERVAL_S), 2)
            for name, count in job_info_rpcs(stack).items()}
    sampler.stopped.set()
    sampler.join()
    overheads = sorted(result["overhead_s"] for result in many)
    passes = sorted(result["pass_s"] for result in many)
    ratio = statistics.mean(overheads) / single["overhead_s"]
    print(json.dumps({
        "benchmark": "concurrent_runs", "runs": RUNS, "job_s": JOB_S, "wall_s": round(wall, 1),
        "single_overhead_s": round(single["overhead_s"], 1),
        "overhead_mean_s": round(statistics.mean(overheads), 1), "overhead_max_s": round(overheads[-1], 1),
        "overhead_ratio": round(ratio, 2), "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO,
        "scheduler_pass_p50_s": round(statistics.median(passes), 2), "scheduler_pass_max_s": round(passes[-1], 2),
        "db_connections_peak": sampler.peak,
        "job_info_rpcs_per_interval": rpcs, "goal_rpcs_per_interval": WAITING_HOSTS,
        "rpcs_goal_met": all(rate <= WAITING_HOSTS[name] * 1.1 for name, rate in rpcs.items()),
    }))


if __name__ == "__main__":
    main()
