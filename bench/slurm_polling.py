"""Status RPCs that slurmctld sees per poll interval: our per-cluster watcher vs per-job polling.

For 1, 50 and 200 pending/running jobs (``sleep`` jobs, cancelled afterwards) it watches for a few
intervals with one ``ClusterWatcher`` and, in the same run, polls each job on its own the way
per-job operators do, counting REQUEST_JOB_INFO in ``sdiag`` for both. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

from operators.slurm.rest import SlurmRestClient
from operators.slurm.watcher import ClusterWatcher, PollSettings
from stack.settings import StackPaths

SIZES = (1, 50, 200)
ROUNDS = 5
INTERVAL_S = 1.0


def job_info_rpcs() -> int:
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    # /jobs is one REQUEST_JOB_INFO; /job/{id} is one REQUEST_JOB_INFO_SINGLE
    return sum(int(count) for count in re.findall(r"REQUEST_JOB_INFO(?:_SINGLE)?\s+\(\s*\d+\)\s+count:(\d+)", out))


def measure_watcher(client_factory, job_ids: list[int]) -> float:
    async def watch() -> None:
        watcher = ClusterWatcher(client_factory, PollSettings(interval_s=INTERVAL_S))
        waits = [asyncio.ensure_future(watcher.wait(job_id)) for job_id in job_ids]
        while watcher.stats.status_calls < ROUNDS:
            await asyncio.sleep(0.05)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    before = job_info_rpcs()
    asyncio.run(watch())
    return (job_info_rpcs() - before) / ROUNDS


def measure_per_job(client: SlurmRestClient, job_ids: list[int]) -> float:
    before = job_info_rpcs()
    for _ in range(ROUNDS):
        for job_id in job_ids:
            client.status(job_id)
        time.sleep(INTERVAL_S)
    return (job_info_rpcs() - before) / ROUNDS


def main() -> None:
    info = json.loads(StackPaths.from_env().info_file.read_text())
    rest = info["slurmrestd"]

    def factory() -> SlurmRestClient:
        return SlurmRestClient(rest["url"], rest["user"], rest["token"])

    client = factory()
    figures = {}
    for size in SIZES:
        job_ids = [client.submit("#!/bin/bash\nsleep 600\n", name=f"bench-poll-{n}", account=info["account"],
                                 current_working_directory=info["jobs_dir"], memory_per_node=32, time_limit=15,
                                 standard_output="/dev/null") for n in range(size)]
        try:
            figures[str(size)] = {"watcher_rpcs_per_interval": round(measure_watcher(factory, job_ids), 2),
                                  "per_job_rpcs_per_interval": round(measure_per_job(client, job_ids), 2)}
        finally:
            subprocess.run(["scancel", *map(str, job_ids)], check=False)
        print(f"{size} jobs: {figures[str(size)]}", file=sys.stderr)
    print(json.dumps({"benchmark": "slurm_polling", "interval_s": INTERVAL_S, "rounds": ROUNDS,
                      "jobs": figures}))


if __name__ == "__main__":
    main()
