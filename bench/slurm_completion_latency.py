"""Completion detection through real Airflow: from a job's end (sacct ``End``) to its task's success.

Triggers ``slurm_job_sweep`` with N short jobs (default 20, ``BENCH_JOBS``; 1 s each, 2 s poll
interval, over slurmrestd) and, once the run has succeeded, compares each mapped task's end time
with its job's end in accounting. The span covers the watcher noticing the end, the triggerer
firing the event, the scheduler queueing the task again and a worker running ``execute_complete``
(accounting read, credentials removed). sacct's end times are whole seconds. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

from bench.slurm_polling import connect
from stack.airflow_api import AirflowAPI

DAG_ID = "slurm_job_sweep"
TASK_ID = "run_point"


def job_ends(run_id: str) -> dict[int, datetime]:
    """Map index -> the job's end, from accounting (the comment carries the task's identity)."""
    prefix = f"airflow:{DAG_ID}/{run_id}/{TASK_ID}/"
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--starttime", "now-1days", "-o", "Comment,End,State"],
                         capture_output=True, text=True, check=True).stdout
    ends = {}
    for line in out.splitlines():
        comment, end, state = line.split("|")
        if comment.startswith(prefix) and state == "COMPLETED":
            ends[int(comment.removeprefix(prefix))] = datetime.fromisoformat(end).replace(tzinfo=UTC)
    return ends


def main() -> None:
    count = int(os.environ.get("BENCH_JOBS", "20"))
    info, _, _ = connect()
    api = AirflowAPI.of_stack(info)
    api.wait_for_dag(DAG_ID)
    run_id = f"latency-{os.getpid()}-{int(time.time())}"
    api.trigger(DAG_ID, {"count": count, "seconds": 1}, run_id=run_id)
    state = api.wait_for_run(DAG_ID, run_id, timeout_s=900)["state"]
    if state != "success":
        raise SystemExit(f"{DAG_ID} run {run_id} ended {state}")
    tasks = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?task_id={TASK_ID}&limit={count}")
    ends = job_ends(run_id)
    latencies = sorted(
        (datetime.fromisoformat(task["end_date"].replace("Z", "+00:00")) - ends[task["map_index"]]).total_seconds()
        for task in tasks["task_instances"] if task["map_index"] in ends)
    if len(latencies) != count:
        print(f"only {len(latencies)} of {count} jobs found in accounting", file=sys.stderr)
    print(json.dumps({
        "benchmark": "slurm_completion_latency", "jobs": count, "measured": len(latencies), "poll_interval_s": 2.0,
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(latencies[max(0, round(0.95 * len(latencies)) - 1)], 2),
        "max_s": round(latencies[-1], 2), "min_s": round(latencies[0], 2),
    }))


if __name__ == "__main__":
    main()
