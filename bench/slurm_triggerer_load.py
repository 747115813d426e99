"""The real Airflow triggerer with many deferred Slurm tasks: memory, CPU, status RPCs, cancel time.

``slurm_watch_scale.py`` measures the watcher in a process of its own; this one measures it where
it runs in production. It triggers ``slurm_job_sweep`` with N mapped tasks (default 100,
``BENCH_DEFERRED``) whose jobs sleep long enough to outlast the run, waits until all N are deferred,
then for a 60 s window records the triggerer's process tree (RSS, CPU seconds) and slurmctld's
job-status RPC counters (REST ``diag``, what ``sdiag`` shows), next to an idle window of the same
length just before the sweep. Finally it marks the DAG run failed and times until no job of the
sweep is active any more (every task's trigger cancels its own job). Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.slurm_polling import REST_STATUS_RPCS, connect, rpc_counts, rpc_delta
from stack.airflow_api import AirflowAPI

DAG_ID = "slurm_job_sweep"
TASK_ID = "run_point"
WINDOW_S = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(f"[slurm_triggerer_load] {message}", file=sys.stderr, flush=True)


def triggerer_pid() -> int:
    repo = Path(__file__).resolve().parent.parent
    services = json.loads(subprocess.run([str(repo / "factory"), "stack", "status", "--json"], check=True,
                                         capture_output=True, text=True).stdout)
    return next(service["pid"] for service in services if service["service"] == "airflow-triggerer")


def process_tree(root: int) -> list[int]:
    """The triggerer and its children (Airflow 3 runs triggers in a child process)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def tree_usage(root: int) -> tuple[int, float]:
    """RSS bytes and CPU seconds (user + system) of the process tree."""
    rss, cpu = 0, 0.0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rss += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return rss, cpu


def window(rest: Any, root: int) -> dict[str, float]:
    """Status RPCs, triggerer CPU seconds and peak RSS over ``WINDOW_S``."""
    before, (_, cpu_before) = rpc_counts(rest), tree_usage(root)
    peak, deadline = 0, time.monotonic() + WINDOW_S
    while time.monotonic() < deadline:
        peak = max(peak, tree_usage(root)[0])
        time.sleep(2)
    rss, cpu_after = tree_usage(root)
    return {"status_rpcs": rpc_delta(before, rpc_counts(rest), REST_STATUS_RPCS),
            "cpu_s": round(cpu_after - cpu_before, 2), "peak_rss_mib": round(max(peak, rss) / 2**20, 1)}


def sweep_jobs(cli: Any, run_id: str) -> list[int]:
    prefix = f"airflow:{DAG_ID}/{run_id}/{TASK_ID}/"
    return [job.job_id for job in cli.jobs().values() if job.comment.startswith(prefix) and not job.finished]


def deferred_count(api: AirflowAPI, run_id: str) -> int:
    answer = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?task_id={TASK_ID}&state=deferred&limit=1")
    return int(answer["total_entries"])


def main() -> None:
    count = int(os.environ.get("BENCH_DEFERRED", "100"))
    info, rest, cli = connect()
    api = AirflowAPI.of_stack(info)
    api.wait_for_dag(DAG_ID)
    root = triggerer_pid()
    progress(f"idle window ({WINDOW_S:.0f} s)")
    idle = window(rest, root)
    run_id = f"bench-{os.getpid()}-{int(time.time())}"
    api.trigger(DAG_ID, {"count": count, "seconds": 3000}, run_id=run_id)
    began = time.monotonic()
    try:
        while (deferred := deferred_count(api, run_id)) < count:
            if time.monotonic() - began > 900:
                raise SystemExit(f"only {deferred} of {count} tasks deferred after 900 s")
            time.sleep(3)
        all_deferred_s = time.monotonic() - began
        progress(f"{count} tasks deferred after {all_deferred_s:.0f} s; measuring window ({WINDOW_S:.0f} s)")
        loaded = window(rest, root)
        jobs_before_cancel = len(sweep_jobs(cli, run_id))
        api.patch(f"/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})
        marked = time.monotonic()
        while sweep_jobs(cli, run_id):
            if time.monotonic() - marked > 300:
                break
            time.sleep(0.5)
        cancel_all_s = time.monotonic() - marked
    finally:
        for job_id in sweep_jobs(cli, run_id):
            cli.cancel(job_id)
    interval_s = 2.0
    print(json.dumps({
        "benchmark": "slurm_triggerer_load", "deferred_tasks": count, "active_jobs": jobs_before_cancel,
        "all_deferred_after_s": round(all_deferred_s, 1), "window_s": WINDOW_S,
        "idle": idle, "loaded": loaded,
        "status_rpcs_per_interval_loaded": round(loaded["status_rpcs"] / (WINDOW_S / interval_s), 2),
        "rss_added_mib": round(loaded["peak_rss_mib"] - idle["peak_rss_mib"], 1),
        "cancel_all_after_run_marked_failed_s": round(cancel_all_s, 1),
        "left_active": len(sweep_jobs(cli, run_id)),
    }))


if __name__ == "__main__":
    main()
