"""Status RPCs per cluster per interval with 100 deferred jobs spread over the two sites.

100 held jobs (``sbatch --hold``: they take no CPU and cannot end while measured), 50 on each site,
submitted through each site's own transport (``factory_slurm_<site>``: ``squeue``/``sbatch`` on the
login node over SSH), each named ``bench-sites-<pid>-<n>``. Then one ``ClusterWatcher`` per site, both
in one asyncio event loop as in the triggerer, watches them for 60 s at a 2 s interval. slurmctld's RPC
counters (``sdiag`` on each site's controller node) are read before and after, and over 20 s idle
windows just before and just after watching: other clients' calls (the stack's triggerer with a deferred
task, tests) are estimated from their mean, and ``background_changed`` says when the two differ (a client
started or stopped meanwhile: the net figure is then an estimate). Per site: the
watcher's status calls per interval, and the job-info RPCs slurmctld counted per interval (``squeue
--user`` is one REQUEST_JOB_USER_INFO, with a REQUEST_PARTITION_INFO and a REQUEST_FED_INFO beside it).
Goal: one status call, one job-info RPC, per cluster per interval, whatever the number of jobs.

Every job named so is cancelled at the end on the site's controller node (``scancel`` as root there:
it works even with the login node unreachable), also on an error, Ctrl-C or ``kill``, and the run
checks that none is left. Prints one JSON line. ``BENCH_JOBS_PER_SITE`` (50) changes the size.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bench.sites import BenchSite, private_control_dir, say, sdiag_rpcs, uninterrupted
from bench.slurm_polling import exit_cleanly_on_sigterm
from operators.slurm.script import BatchJob, render
from operators.slurm.watcher import ClusterWatcher, PollSettings, Watch
from stack.clusters.site import JOB_WORKDIR, SITES
from stack.services.sites import JOB_INFO_RPCS
from stack.settings import StackPaths

JOBS_PER_SITE = int(os.environ.get("BENCH_JOBS_PER_SITE", "50"))
INTERVAL_S = 2.0
WATCH_S = 60.0
IDLE_S = 20.0
SUBMIT_WORKERS = 8
SIDE_RPCS = ("REQUEST_PARTITION_INFO", "REQUEST_FED_INFO")
GOAL_PER_INTERVAL = 1.0
TOLERANCE = 1.1  # a window of 60 s holds 30 intervals and may catch one more call at its edges
ACTIVE_STATES = "PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING"


def held_job(site: BenchSite, name: str) -> BatchJob:
    return BatchJob(name=name, account=site.info["accounts"][0], partition=None, cpus=1, memory="32M",
                    time="00:15:00", gpus=0, workdir=JOB_WORKDIR, commands=[["sleep", "600"]], signal=None,
                    extra_directives=["--hold"])


def submit(site: BenchSite, transport, prefix: str) -> list[int]:
    """``JOBS_PER_SITE`` separate jobs (the watcher ignores array rows), ``SUBMIT_WORKERS`` at a time."""
    job = held_job(site, prefix)

    def one(number: int) -> int:
        named = replace(job, name=f"{prefix}-{number}")
        return transport.submit(named, render(named))

    pool = ThreadPoolExecutor(SUBMIT_WORKERS)
    try:
        return list(pool.map(one, range(JOBS_PER_SITE)))
    finally:  # on Ctrl-C: submit nothing more, so the cancel that follows catches every job
        pool.shutdown(wait=True, cancel_futures=True)


def ours_active(site: BenchSite, prefix: str) -> list[int]:
    listed = site.on_ctl(["squeue", "--noheader", f"--user={site.info['job_user']}", f"--states={ACTIVE_STATES}",
                          "--format=%i|%j"])
    return [int(job_id) for line in listed.splitlines() if "|" in line
            for job_id, name in [line.strip().split("|", 1)] if name.startswith(f"{prefix}-") and job_id.isdigit()]


def cancel_ours(site: BenchSite, prefix: str, timeout_s: float = 60.0) -> list[int]:
    """Every job of this run on the site, by name (also those whose ids the submission never returned)."""
    deadline = time.monotonic() + timeout_s
    while (left := ours_active(site, prefix)) and time.monotonic() < deadline:
        site.on_ctl(["scancel", *map(str, left)])
        time.sleep(1.0)
    return left


def count(before: dict[str, int], after: dict[str, int], kinds: tuple[str, ...]) -> int:
    return sum(after.get(kind, 0) - before.get(kind, 0) for kind in kinds)


def watch_both(sites: list[BenchSite], transports: dict[str, Any],
               job_ids: dict[str, list[int]]) -> tuple[dict[str, ClusterWatcher], dict[str, dict[str, int]]]:
    """One watcher per site in one event loop for ``WATCH_S``; per site how many jobs it reported held."""
    watchers = {site.name: ClusterWatcher(lambda name=site.name: transports[name], PollSettings(interval_s=INTERVAL_S))
                for site in sites}
    seen: dict[str, dict[str, int]] = {site.name: {"status_update": 0, "held": 0} for site in sites}

    async def follow(name: str, job_id: int) -> None:
        first = True
        async for update in watchers[name].watch(Watch(job_id)):
            if update.kind == "status" and first and update.status is not None:
                first = False
                seen[name]["status_update"] += 1
                seen[name]["held"] += update.status.state == "PENDING"

    async def run() -> None:
        followers = [asyncio.create_task(follow(name, job_id)) for name, ids in job_ids.items() for job_id in ids]
        await asyncio.sleep(WATCH_S)
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)

    asyncio.run(run())
    return watchers, seen


Window = tuple[dict[str, int], dict[str, int], float]  # counters before, after, seconds between


def per_interval(window: Window) -> float:
    before, after, seconds = window
    return count(before, after, JOB_INFO_RPCS) / seconds * INTERVAL_S


def figures(watched: int, watcher: ClusterWatcher, seen: dict[str, int], idle: tuple[Window, Window],
            window: Window) -> dict[str, Any]:
    before, after, window_s = window
    intervals = window_s / INTERVAL_S
    job_info = count(before, after, JOB_INFO_RPCS)
    background_before, background_after = per_interval(idle[0]), per_interval(idle[1])
    background = (background_before + background_after) / 2
    status_per_interval = watcher.stats.status_calls / intervals
    rpcs_per_interval = job_info / intervals
    net = rpcs_per_interval - background
    return {
        "jobs_watched": watched, "jobs_with_status_update": seen["status_update"], "jobs_reported_held": seen["held"],
        "window_s": round(window_s, 1), "intervals": round(intervals, 1),
        "status_calls": watcher.stats.status_calls, "accounting_calls": watcher.stats.accounting_calls,
        "status_calls_per_interval": round(status_per_interval, 2),
        "job_info_rpcs": job_info, "job_info_rpcs_per_interval": round(rpcs_per_interval, 2),
        "background_job_info_rpcs_per_interval": round(background, 2),
        "background_before_after": [round(background_before, 2), round(background_after, 2)],
        "background_changed": abs(background_before - background_after) > 0.25,
        "job_info_rpcs_per_interval_net": round(net, 2),
        "rpcs_in_window": {kind: count(before, after, (kind,)) for kind in (*JOB_INFO_RPCS, *SIDE_RPCS)},
        "goal": f"{GOAL_PER_INTERVAL:g} status call per interval", "goal_met": (
            status_per_interval <= GOAL_PER_INTERVAL * TOLERANCE and net <= GOAL_PER_INTERVAL * TOLERANCE),
    }


def idle_window(sites: list[BenchSite]) -> dict[str, Window]:
    """Each site's counters over ``IDLE_S`` while this run asks nothing: what other clients cause."""
    before, began = {site.name: sdiag_rpcs(site) for site in sites}, time.monotonic()
    time.sleep(IDLE_S)
    after, seconds = {site.name: sdiag_rpcs(site) for site in sites}, time.monotonic() - began
    return {site.name: (before[site.name], after[site.name], seconds) for site in sites}


def main() -> None:
    exit_cleanly_on_sigterm()
    paths = StackPaths.from_env()
    prefix = f"bench-sites-{os.getpid()}"
    began = time.monotonic()
    results: dict[str, Any] = {}
    with private_control_dir() as control_dir:
        sites = [BenchSite(paths, site, control_dir) for site in SITES]
        transports = {site.name: site.transport() for site in sites}
        try:
            job_ids = {}
            for site in sites:
                submit_began = time.monotonic()
                job_ids[site.name] = submit(site, transports[site.name], prefix)
                say(f"{site.name}: {len(job_ids[site.name])} held jobs in {time.monotonic() - submit_began:.1f} s")

            idle_first = idle_window(sites)
            before, window_began = {site.name: sdiag_rpcs(site) for site in sites}, time.monotonic()
            watchers, seen = watch_both(sites, transports, job_ids)
            after, window_s = {site.name: sdiag_rpcs(site) for site in sites}, time.monotonic() - window_began
            idle_last = idle_window(sites)

            for site in sites:
                name = site.name
                results[name] = figures(len(job_ids[name]), watchers[name], seen[name],
                                        (idle_first[name], idle_last[name]), (before[name], after[name], window_s))
                say(f"{site.name}: {results[site.name]}")
        finally:
            with uninterrupted():
                cancel_began = time.monotonic()
                for site in sites:
                    left = cancel_ours(site, prefix)
                    results.setdefault(site.name, {})["left_after_cancel"] = len(left)
                    if left:
                        say(f"WARNING: {site.name}: jobs of this run still active after scancel: {left}")
                cancel_s = time.monotonic() - cancel_began
    print(json.dumps({"benchmark": "sites_status_rpcs", "transport": "ssh", "jobs_per_site": JOBS_PER_SITE,
                      "interval_s": INTERVAL_S, "watch_s": WATCH_S,
                      "idle_windows_s": [IDLE_S, IDLE_S], "sites": results,
                      "goal_met": all(results[site.name].get("goal_met") for site in sites),
                      "cancel_s": round(cancel_s, 1), "total_s": round(time.monotonic() - began, 1)}))


if __name__ == "__main__":
    main()
