"""One poller per cluster against the real controller: many jobs, one status call per interval."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time

from operators.slurm.rest import SlurmRestClient
from operators.slurm.watcher import ClusterWatcher, PollSettings

JOBS = 12


def job_info_rpcs() -> int:
    """Job status RPCs from slurmctld's own statistics (sdiag)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    # /jobs is one REQUEST_JOB_INFO; /job/{id} is one REQUEST_JOB_INFO_SINGLE
    return sum(int(count) for count in re.findall(r"REQUEST_JOB_INFO(?:_SINGLE)?\s+\(\s*\d+\)\s+count:(\d+)", out))


def test_many_jobs_cost_one_status_call_per_interval(stack_info):
    rest = stack_info["slurmrestd"]
    client = SlurmRestClient(rest["url"], rest["user"], rest["token"])
    job_ids = [client.submit("#!/bin/bash\nsleep 1\n", name=f"watcher-test-{n}", account=stack_info["account"],
                             current_working_directory=stack_info["jobs_dir"], cpus_per_task=1,
                             memory_per_node=64, time_limit=2, standard_output="/dev/null")
               for n in range(JOBS)]
    failing = client.submit("#!/bin/bash\nexit 3\n", name="watcher-test-fail", account=stack_info["account"],
                            current_working_directory=stack_info["jobs_dir"], memory_per_node=64,
                            standard_output="/dev/null")
    rpcs_before = job_info_rpcs()
    began = time.monotonic()

    async def watch_all():
        watcher = ClusterWatcher(lambda: SlurmRestClient(rest["url"], rest["user"], rest["token"]),
                                 PollSettings(interval_s=1.0))
        results = await asyncio.wait_for(asyncio.gather(*(watcher.wait(j) for j in [*job_ids, failing])), 180)
        return watcher, results

    watcher, results = asyncio.run(watch_all())
    elapsed = time.monotonic() - began
    rpcs = job_info_rpcs() - rpcs_before

    assert [status.state for status in results[:-1]] == ["COMPLETED"] * JOBS
    assert results[-1].state == "FAILED" and results[-1].exit_code == 3
    rounds = watcher.stats.status_calls
    assert rounds <= elapsed / 1.0 + 2, "more status calls than intervals"
    # 13 jobs watched at once (2 cores run them two at a time): per-job polling would cost up to
    # 13 job-info RPCs a round; the watcher costs one whatever the number of jobs
    assert rpcs <= rounds + 2, f"slurmctld saw {rpcs} job-info RPCs for {rounds} polling rounds"
    assert watcher.stats.accounting_calls == 0, "all jobs were still known to the controller"
