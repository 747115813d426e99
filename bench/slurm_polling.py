"""Status RPCs that slurmctld sees per poll interval: our per-cluster watcher vs per-job polling.

For 1, 50 and 200 held jobs (submitted with ``sbatch --hold``, so they take no CPU from anyone
else and cannot end mid-measurement) it watches for a few intervals with one ``ClusterWatcher``
over slurmrestd and, in the same run, polls each job on its own the way per-job operators do
(``GET /job/{id}``). slurmctld's own counters (REST ``diag``) of REQUEST_JOB_INFO(+_SINGLE) give
the figures; the same counters over an idle window just before say how much of that came from
other clients of the cluster. Every job submitted is cancelled at the end, also on Ctrl-C.
Prints one JSON line.

The helpers for held jobs and RPC counting are shared with ``slurm_watch_scale.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from operators.slurm.cli import LocalCommands
from operators.slurm.files import SharedFiles
from operators.slurm.model import JobStatus
from operators.slurm.rest import RestControl
from operators.slurm.script import BatchJob, render
from operators.slurm.transport import SlurmTransport
from operators.slurm.watcher import ClusterWatcher, PollSettings
from stack.settings import StackPaths

SIZES = (1, 50, 200)
ROUNDS = 5
INTERVAL_S = 1.0
# /jobs is one REQUEST_JOB_INFO; /job/{id} is one REQUEST_JOB_INFO_SINGLE
REST_STATUS_RPCS = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE")
SUBMIT_WORKERS = 8  # parallel sbatch calls: slurmctld takes them as fast as one at a time, minus our waits


def connect() -> tuple[dict[str, Any], RestControl, LocalCommands]:
    """The stack's settings, slurmrestd (also for slurmctld's RPC counters) and the job user's commands."""
    info = json.loads(StackPaths.from_env().info_file.read_text())
    rest = info["slurmrestd"]
    return info, RestControl(rest["url"], rest["user"], rest["token"]), LocalCommands(user=info["job_user"])


def rpc_counts(rest: RestControl) -> dict[str, int]:
    """slurmctld's RPC counters by message type since its last reset (what ``sdiag`` shows)."""
    rows = rest.diag()["statistics"]["rpcs_by_message_type"]
    return {row["message_type"]: int(row["count"]) for row in rows}


def rpc_delta(before: dict[str, int], after: dict[str, int], types: Collection[str]) -> int:
    return sum(after.get(kind, 0) - before.get(kind, 0) for kind in types)


def held_job(info: dict[str, Any], name: str) -> BatchJob:
    """A job that never starts (``--hold``) unless released: it cannot end while we measure."""
    return BatchJob(name=name, account=info["account"], partition=None, cpus=1, memory="32M",
                    time="00:15:00", gpus=0, workdir=info["jobs_dir"], commands=[["sleep", "600"]],
                    signal=None, extra_directives=["--hold"])


def submit_all(transport: LocalCommands, job: BatchJob, count: int) -> list[int]:
    """``count`` separate jobs (not an array: the watcher ignores array rows), submitted in parallel."""
    script = render(job)
    pool = ThreadPoolExecutor(SUBMIT_WORKERS)
    try:
        return list(pool.map(lambda _: transport.submit(job, script), range(count)))
    finally:  # on Ctrl-C: submit nothing more, so the cancel that follows catches every job
        pool.shutdown(wait=True, cancel_futures=True)


def active_named(transport: LocalCommands, name: str) -> list[int]:
    output = transport.runner.run(["squeue", "--noheader", f"--user={transport.user}", f"--name={name}",
                                   "--states=PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING", "--format=%i"])
    return [int(line) for line in output.split() if line.isdigit()]


def cancel_named(transport: LocalCommands, name: str, timeout_s: float = 60.0) -> list[int]:
    """Cancel every job of ours with this name; the ones still not ended after ``timeout_s``."""
    transport.runner.run(["scancel", f"--user={transport.user}", f"--name={name}"])
    deadline = time.monotonic() + timeout_s
    while (left := active_named(transport, name)) and time.monotonic() < deadline:
        time.sleep(1.0)
    return left


@contextmanager
def cancelled_afterwards(transport: LocalCommands, name: str) -> Iterator[None]:
    """Whatever happens inside (errors, Ctrl-C), no job named ``name`` outlives the benchmark."""
    try:
        yield
    finally:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        try:
            left = cancel_named(transport, name)
            if left:
                print(f"WARNING: jobs named {name} still active after scancel: {left}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, interrupt)


def exit_cleanly_on_sigterm() -> None:
    """``kill`` runs the ``finally`` blocks (and so the cancels) like Ctrl-C does."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


class CountingRest(RestControl):
    """Counts answered ``jobs()`` calls: the watcher counts a call when it starts it."""

    answered = 0

    def jobs(self) -> dict[int, JobStatus]:
        statuses = super().jobs()
        self.answered += 1
        return statuses


def measure_watcher(info: dict[str, Any], rest: RestControl, job_ids: list[int]) -> tuple[int, int, float]:
    """Status RPCs, answered watcher calls (intervals) and the seconds the window lasted."""
    transport = CountingRest(rest.base_url, rest.user, info["slurmrestd"]["token"], api_version=rest.api_version)

    async def watch() -> None:
        watcher = ClusterWatcher(lambda: SlurmTransport(transport, SharedFiles()), PollSettings(interval_s=INTERVAL_S))
        waits = [asyncio.ensure_future(watcher.wait(job_id)) for job_id in job_ids]
        while transport.answered < ROUNDS:
            await asyncio.sleep(0.05)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    before, began = rpc_counts(rest), time.monotonic()
    asyncio.run(watch())  # returns once the poll loop and its worker threads have stopped
    seconds = time.monotonic() - began
    return rpc_delta(before, rpc_counts(rest), REST_STATUS_RPCS), transport.answered, seconds


def measure_per_job(rest: RestControl, job_ids: list[int]) -> tuple[int, int, float]:
    before, began = rpc_counts(rest), time.monotonic()
    for _ in range(ROUNDS):
        for job_id in job_ids:
            rest.status(job_id)
        time.sleep(INTERVAL_S)
    seconds = time.monotonic() - began
    return rpc_delta(before, rpc_counts(rest), REST_STATUS_RPCS), ROUNDS, seconds


def background_rate(rest: RestControl, seconds: float) -> float:
    """RPCs per second that other clients cause while we do nothing (0 on a quiet cluster)."""
    before = rpc_counts(rest)
    time.sleep(seconds)
    return rpc_delta(before, rpc_counts(rest), REST_STATUS_RPCS) / seconds


def main() -> None:
    exit_cleanly_on_sigterm()
    info, rest, local = connect()
    name = f"bench-poll-{os.getpid()}"
    figures = {}
    with cancelled_afterwards(local, name):
        for size in SIZES:
            job_ids = submit_all(local, held_job(info, name), size)
            background = background_rate(rest, ROUNDS * INTERVAL_S)
            watcher_rpcs, watcher_rounds, watcher_s = measure_watcher(info, rest, job_ids)
            per_job_rpcs, per_job_rounds, per_job_s = measure_per_job(rest, job_ids)
            figures[str(size)] = {
                "watcher_rpcs_per_interval": round(watcher_rpcs / watcher_rounds, 2),
                "per_job_rpcs_per_interval": round(per_job_rpcs / per_job_rounds, 2),
                # what other clients added in the same time; subtract it to get ours alone
                "background_rpcs_per_interval": {
                    "watcher": round(background * watcher_s / watcher_rounds, 2),
                    "per_job": round(background * per_job_s / per_job_rounds, 2)},
            }
            local.runner.run(["scancel", *map(str, job_ids)])
            print(f"{size} jobs: {figures[str(size)]}", file=sys.stderr)
    print(json.dumps({"benchmark": "slurm_polling", "transport": f"rest {rest.api_version}",
                      "interval_s": INTERVAL_S, "rounds": ROUNDS, "jobs": figures}))


if __name__ == "__main__":
    main()
