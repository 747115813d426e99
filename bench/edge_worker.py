"""The Edge worker on site A's login node: job pick-up latency and its load on the login node.

Triggers ``BENCH_EDGE_TASKS`` (10) runs of ``slurm_job_example_site_a_edge`` at once, each a job of
``BENCH_EDGE_JOB_S`` (90) seconds on site A (two compute nodes: some jobs pend, all tasks wait on Slurm in
the worker). Pick-up latency is each task's ``queued_dttm`` -> ``start_date`` (the API server's record:
the worker polls for jobs every second, then its task process parses the DAG file and starts). The load is
that of every process of the worker's tree on the login node (the worker, each task's supervisor and task
process), sampled every second while all tasks wait: CPU in cores (utime + stime over wall time) and
resident memory (sum of RSS). Prints one JSON line.

Goals (chosen here; the issue names none): pick-up p95 <= 5 s; while waiting, <= 0.25 cores and
<= 250 MiB per waiting task on the login node (the price of waiting in the worker, where a deferred task
would wait in the central triggerer: a login node is shared, so it must stay light).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from datetime import datetime
from pathlib import Path

from bench.sites import status_value_kib
from stack.airflow_api import AirflowAPI
from stack.manager import Stack
from stack.process import family
from stack.settings import StackPaths

DAG_ID = "slurm_job_example_site_a_edge"
TASK_ID = "run_job"
TASKS = int(os.environ.get("BENCH_EDGE_TASKS", "10"))
JOB_S = int(os.environ.get("BENCH_EDGE_JOB_S", "90"))
PICKUP_GOAL_P95_S = 5.0
CPU_GOAL_CORES = 0.25
RSS_GOAL_PER_TASK_MIB = 250
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def rss_mib(pids: list[int]) -> float:
    return sum(status_value_kib(pid, "status", "VmRSS") for pid in pids) / 1024


def when(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def task(api: AirflowAPI, run_id: str) -> dict:
    return api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}")


def main() -> None:
    paths = StackPaths.from_env()
    stack = Stack(paths)
    [worker] = [edge for edge in stack.factory.edge_workers() if edge.site.site.name == "site_a"]
    worker_pid = stack.supervised(worker.name).pid()
    if worker_pid is None:
        raise SystemExit(f"{worker.name} is not running: ./factory stack up --profile production")
    api = AirflowAPI.of_stack(json.loads(paths.info_file.read_text()))
    api.wait_for_dag(DAG_ID)
    idle_rss = rss_mib(family(worker_pid))
    runs = [f"edge-bench-{uuid.uuid4().hex[:8]}" for _ in range(TASKS)]
    for run_id in runs:
        api.trigger(DAG_ID, {"seconds": JOB_S, "exit_code": 0}, run_id=run_id)
    deadline = time.monotonic() + 300
    while not all(task(api, run_id)["state"] == "running" for run_id in runs):
        if time.monotonic() > deadline:
            raise SystemExit("not every task was running on the Edge worker within 300 s")
        time.sleep(1)
    samples, began, cpu_began = [], time.monotonic(), cpu_seconds(family(worker_pid))
    for _ in range(30):  # 30 s of all tasks waiting on their jobs
        time.sleep(1)
        samples.append(rss_mib(family(worker_pid)))
    cores = (cpu_seconds(family(worker_pid)) - cpu_began) / (time.monotonic() - began)
    states = {run_id: api.wait_for_run(DAG_ID, run_id, timeout_s=JOB_S * TASKS + 600)["state"] for run_id in runs}
    pickups = sorted(when(ti["start_date"]) - when(ti["queued_when"]) for ti in (task(api, r) for r in runs))
    peak_rss = max(samples)
    per_task = (peak_rss - idle_rss) / TASKS
    p95 = pickups[max(0, round(0.95 * len(pickups)) - 1)]
    print(json.dumps({
        "benchmark": "edge_worker", "tasks": TASKS, "job_s": JOB_S,
        "succeeded": sum(state == "success" for state in states.values()),
        "pickup_p50_s": round(statistics.median(pickups), 2), "pickup_p95_s": round(p95, 2),
        "pickup_max_s": round(pickups[-1], 2), "pickup_goal_p95_s": PICKUP_GOAL_P95_S,
        "pickup_goal_met": p95 <= PICKUP_GOAL_P95_S,
        "login_cpu_cores": round(cores, 3), "cpu_goal_cores": CPU_GOAL_CORES, "cpu_goal_met": cores <= CPU_GOAL_CORES,
        "worker_idle_rss_mib": round(idle_rss), "login_peak_rss_mib": round(peak_rss),
        "rss_per_waiting_task_mib": round(per_task), "rss_goal_per_task_mib": RSS_GOAL_PER_TASK_MIB,
        "rss_goal_met": per_task <= RSS_GOAL_PER_TASK_MIB,
    }))


if __name__ == "__main__":
    main()
