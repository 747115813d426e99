"""How fast one ``ClusterWatcher`` reports job ends, and what watching 1000 jobs costs.

(a) Completion latency: 30 short jobs (sleep 1-3 s, submitted 0.5 s apart) through the local
    command transport, all watched by one watcher (2 s interval). Latency is the moment the
    watcher delivered a job's final update minus the job's end in accounting (``sacct`` End, whole
    seconds, so figures carry up to 1 s of rounding on top of the watcher's own delay).
(b) Scale: 1000 held jobs (separate jobs, not an array: the watcher ignores array rows) watched for
    60 s by one watcher in one event loop: peak and added RSS, CPU seconds of this process and of
    the ``squeue`` subprocesses it runs, status calls, answer time of one ``jobs()`` call, and the
    job-info RPCs slurmctld counted in the window. If submitting 1000 would take over 120 s it
    uses 500 and says so.

Every job submitted is cancelled at the end, also on Ctrl-C. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.slurm_polling import (
    active_named,
    cancelled_afterwards,
    connect,
    exit_cleanly_on_sigterm,
    held_job,
    rpc_counts,
    rpc_delta,
    submit_all,
)
from operators.slurm.cli import LocalCommands
from operators.slurm.files import SharedFiles
from operators.slurm.model import JobStatus
from operators.slurm.rest import RestControl
from operators.slurm.script import BatchJob, render
from operators.slurm.transport import SlurmTransport
from operators.slurm.watcher import ClusterWatcher, PollSettings, Watch

INTERVAL_S = 2.0
LATENCY_JOBS = 30
SUBMIT_GAP_S = 0.5
SCALE_JOBS = 1000
SCALE_FALLBACK_JOBS = 500
SUBMIT_BUDGET_S = 120.0
WATCH_S = 60.0
BACKGROUND_S = 15.0  # idle window before watching: other clients' job-info RPCs per second
# squeue --user asks REQUEST_JOB_USER_INFO, slurmrestd's /jobs REQUEST_JOB_INFO, /job/{id} _SINGLE;
# every squeue call also asks for the partitions and the federation
JOB_INFO_RPCS = ("REQUEST_JOB_INFO", "REQUEST_JOB_USER_INFO", "REQUEST_JOB_INFO_SINGLE")
SQUEUE_SIDE_RPCS = ("REQUEST_PARTITION_INFO", "REQUEST_FED_INFO")


class TimedCli(LocalCommands):
    """Records how long each ``jobs()`` call took and how many jobs it listed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_s: list[float] = []
        self.listed: list[int] = []

    def jobs(self) -> dict[int, JobStatus]:
        began = time.monotonic()
        statuses = super().jobs()
        self.answer_s.append(time.monotonic() - began)
        self.listed.append(len(statuses))
        return statuses


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: an actual observed value, not an interpolation."""
    ranked = sorted(values)
    return ranked[max(0, min(len(ranked) - 1, round(fraction * len(ranked) + 0.5) - 1))]


def sacct_ends(transport: LocalCommands, job_ids: list[int], since: datetime) -> dict[int, float]:
    """Each job's end (epoch seconds) as accounting recorded it; jobs without one yet are missing."""
    output = transport.runner.run(["sacct", "-n", "-P", "-X", f"--starttime={since:%Y-%m-%dT%H:%M:%S}",
                                   "-j", ",".join(map(str, job_ids)), "-o", "JobID,End"])
    ends = {}
    for line in output.splitlines():
        job_id, _, end = line.partition("|")
        if job_id.isdigit() and end[:1].isdigit():  # "Unknown" until the job has ended
            ends[int(job_id)] = datetime.fromisoformat(end).timestamp()  # local time, like sacct's
    return ends


def short_job(info: dict[str, Any], name: str, workdir: str, seconds: int) -> BatchJob:
    return BatchJob(name=name, account=info["account"], partition=None, cpus=1, memory="32M",
                    time="00:02:00", gpus=0, workdir=workdir, commands=[["sleep", str(seconds)]], signal=None)


def completion_latency(info: dict[str, Any], local: LocalCommands, name: str) -> dict[str, Any]:
    workdir = f"{info['jobs_dir']}/{name}"
    Path(workdir).mkdir(parents=True)  # the jobs' logs go here
    shutil.chown(workdir, info["job_user"], info["job_user"])
    since = datetime.now() - timedelta(minutes=5)
    delivered: dict[int, float] = {}
    watcher = ClusterWatcher(lambda: SlurmTransport(local, SharedFiles()), PollSettings(interval_s=INTERVAL_S))

    async def follow(job_id: int) -> None:
        async for update in watcher.watch(Watch(job_id)):
            if update.kind == "final":
                delivered[job_id] = time.time()

    async def run() -> None:
        followers = []
        for n in range(LATENCY_JOBS):
            job = short_job(info, name, workdir, 1 + n % 3)
            job_id = await asyncio.to_thread(local.submit, job, render(job))
            followers.append(asyncio.create_task(follow(job_id)))
            await asyncio.sleep(SUBMIT_GAP_S)
        await asyncio.gather(*followers)

    began = time.monotonic()
    try:
        asyncio.run(run())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    watched_s = time.monotonic() - began
    job_ids = sorted(delivered)
    ends: dict[int, float] = {}
    for _ in range(30):  # slurmdbd may record the last ends a moment after the controller ended them
        ends = sacct_ends(local, job_ids, since)
        if len(ends) == len(job_ids):
            break
        time.sleep(1.0)
    latencies = [delivered[job_id] - ends[job_id] for job_id in job_ids if job_id in ends]
    if not latencies:
        raise RuntimeError(f"sacct has no End for any of jobs {job_ids}")
    return {
        "jobs": LATENCY_JOBS, "jobs_with_end": len(latencies), "interval_s": INTERVAL_S,
        "p50_s": round(percentile(latencies, 0.50), 2), "p95_s": round(percentile(latencies, 0.95), 2),
        "max_s": round(max(latencies), 2), "min_s": round(min(latencies), 2),
        "status_calls": watcher.stats.status_calls, "accounting_calls": watcher.stats.accounting_calls,
        "wall_s": round(watched_s, 1),
    }


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def submit_scale_jobs(info: dict[str, Any], local: LocalCommands, name: str) -> tuple[list[int], float]:
    """1000 held jobs, or 500 if the first 50 show that 1000 would take over the budget."""
    job = held_job(info, name)
    began = time.monotonic()
    job_ids = submit_all(local, job, 50)
    projected_s = (time.monotonic() - began) / 50 * SCALE_JOBS
    target = SCALE_JOBS if projected_s <= SUBMIT_BUDGET_S else SCALE_FALLBACK_JOBS
    job_ids += submit_all(local, job, target - len(job_ids))
    return job_ids, time.monotonic() - began


def watch_many(info: dict[str, Any], rest: RestControl, job_ids: list[int]) -> dict[str, Any]:
    transport = TimedCli(user=info["job_user"])
    watcher = ClusterWatcher(lambda: SlurmTransport(transport, SharedFiles()), PollSettings(interval_s=INTERVAL_S))
    updated: set[int] = set()
    in_window: dict[str, int] = {}

    async def follow(job_id: int) -> None:
        async for update in watcher.watch(Watch(job_id)):
            if update.kind == "status":
                updated.add(job_id)

    async def run() -> None:
        followers = [asyncio.create_task(follow(job_id)) for job_id in job_ids]
        await asyncio.sleep(WATCH_S)
        in_window["rss_kib"] = rss_kib()  # while every watch is still alive
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)

    idle_before = rpc_counts(rest)
    time.sleep(BACKGROUND_S)
    background_per_s = rpc_delta(idle_before, rpc_counts(rest), JOB_INFO_RPCS) / BACKGROUND_S

    gc.collect()
    rss_before, peak_before = rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rpcs_before, began = rpc_counts(rest), time.monotonic()
    cpu_before, children_before = time.process_time(), children_cpu_s()
    asyncio.run(run())  # returns once the poll loop and its squeue threads have stopped
    cpu_s, children_s = time.process_time() - cpu_before, children_cpu_s() - children_before
    rpcs_after, window_s = rpc_counts(rest), time.monotonic() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "watched_jobs": len(job_ids), "watch_s": WATCH_S, "interval_s": INTERVAL_S,
        "jobs_with_status_update": len(updated),
        "peak_rss_mib": round(peak / 1024, 1), "peak_rss_before_watch_mib": round(peak_before / 1024, 1),
        "rss_before_watch_mib": round(rss_before / 1024, 1),
        "rss_growth_while_watching_mib": round((in_window["rss_kib"] - rss_before) / 1024, 1),
        "cpu_s": round(cpu_s, 2), "children_cpu_s": round(children_s, 2),
        "status_calls": watcher.stats.status_calls, "accounting_calls": watcher.stats.accounting_calls,
        "jobs_call_answer_mean_s": round(statistics.fmean(transport.answer_s), 3),
        "jobs_call_answer_max_s": round(max(transport.answer_s), 3),
        "jobs_listed_per_call": max(transport.listed),
        "job_info_rpcs_in_window": rpc_delta(rpcs_before, rpcs_after, JOB_INFO_RPCS),
        # other clients of the cluster (tests, the triggerer) in the same time, from an idle window
        "job_info_rpcs_background_estimate": round(background_per_s * window_s, 1),
        "slurmctld_rpcs_in_window": {kind: rpc_delta(rpcs_before, rpcs_after, [kind])
                                     for kind in (*JOB_INFO_RPCS, *SQUEUE_SIDE_RPCS)},
    }


def rest_jobs_answer_s(rest: RestControl, calls: int = 5) -> float:
    """The same listing through slurmrestd, for comparison."""
    began = time.monotonic()
    for _ in range(calls):
        rest.jobs()
    return (time.monotonic() - began) / calls


def main() -> None:
    exit_cleanly_on_sigterm()
    info, rest, local = connect()
    run_name = f"bench-wscale-{os.getpid()}"
    began = time.monotonic()

    with cancelled_afterwards(local, f"{run_name}-latency"):
        latency = completion_latency(info, local, f"{run_name}-latency")
    print(f"latency: {latency}", file=sys.stderr)

    scale_name = f"{run_name}-held"
    with cancelled_afterwards(local, scale_name):
        job_ids, submit_s = submit_scale_jobs(info, local, scale_name)
        print(f"submitted {len(job_ids)} held jobs in {submit_s:.1f} s", file=sys.stderr)
        scale = watch_many(info, rest, job_ids)
        scale["rest_jobs_call_answer_mean_s"] = round(rest_jobs_answer_s(rest), 3)
        scale["submit_s"] = round(submit_s, 1)
        if len(job_ids) < SCALE_JOBS:
            scale["reduced"] = f"{len(job_ids)} jobs, not {SCALE_JOBS}: submitting {SCALE_JOBS} would take over " \
                               f"{SUBMIT_BUDGET_S:.0f} s"
        print(f"scale: {scale}", file=sys.stderr)
        cancel_began = time.monotonic()
    scale["cancel_s"] = round(time.monotonic() - cancel_began, 1)
    scale["left_after_cancel"] = len(active_named(local, scale_name))

    print(json.dumps({"benchmark": "slurm_watch_scale", "transport": "local", "completion_latency": latency,
                      "scale": scale, "total_s": round(time.monotonic() - began, 1)}))


if __name__ == "__main__":
    main()
