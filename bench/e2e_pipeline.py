"""End-to-end run of the example pipeline: wall time, Slurm job time, orchestration overhead.

Overhead = wall time - time the Slurm jobs ran (sacct elapsed). It is split into the time tasks
ran on Airflow workers (per task) and the gaps between tasks (scheduling and task start-up).
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from itertools import pairwise

from stack.airflow_api import AirflowAPI
from stack.settings import StackPaths

DAG = "pipeline_breast_cancer"


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    info = json.loads(StackPaths.from_env().info_file.read_text())
    airflow = AirflowAPI.of_stack(info)
    airflow.wait_for_dag(DAG)
    began = time.monotonic()
    run_id = airflow.trigger(DAG, {"revision": "breast-cancer-v1", "train_params": {}})
    run = airflow.wait_for_run(DAG, run_id, timeout_s=900)
    wall_s = time.monotonic() - began
    if run["state"] != "success":
        print(f"{DAG} run {run_id} ended {run['state']}", file=sys.stderr)
        sys.exit(1)
    instances = sorted(airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"],
                       key=lambda ti: ti["start_date"])
    task_s = {ti["task_id"]: round(seconds(ti["start_date"], ti["end_date"]), 2) for ti in instances}
    gaps_s = sum(max(0.0, seconds(a["end_date"], b["start_date"])) for a, b in pairwise(instances))
    jobs = {task: airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value")["value"]
            for task in ("train", "evaluate")}
    job_s = sum(job["elapsed_s"] for job in jobs.values())
    print(json.dumps({
        "benchmark": "e2e_pipeline",
        "wall_s": round(wall_s, 1),
        "slurm_job_s": job_s,
        "overhead_s": round(wall_s - job_s, 1),
        "slurm_jobs": {task: {"job_id": job["job_id"], "elapsed_s": job["elapsed_s"],
                              "max_rss_mb": round((job["max_rss_bytes"] or 0) / 2**20, 1)}
                       for task, job in jobs.items()},
        "task_s": task_s,
        "gaps_between_tasks_s": round(gaps_s, 1),
        "first_task_start_after_trigger_s": round(seconds(run["queued_at"] or run["start_date"],
                                                          instances[0]["start_date"]), 1),
    }))


if __name__ == "__main__":
    main()
