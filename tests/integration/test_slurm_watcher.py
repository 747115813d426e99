"""One poller per cluster against the real controller: many jobs, one status call per interval;
requeue after a node failure; the time-limit warning signal reaching the training process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid

import pytest

from operators.slurm.script import BatchJob, render
from operators.slurm.transport import SlurmTransport
from operators.slurm.transports import make_transport
from operators.slurm.watcher import ClusterWatcher, PollSettings, Watch

JOBS = 12


def job_info_rpcs() -> int:
    """Job status RPCs from slurmctld's own statistics (sdiag)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    # /jobs is one REQUEST_JOB_INFO; /job/{id} is one REQUEST_JOB_INFO_SINGLE
    return sum(int(count) for count in re.findall(r"REQUEST_JOB_INFO(?:_SINGLE)?\s+\(\s*\d+\)\s+count:(\d+)", out))


@pytest.fixture
def rest(stack_info) -> SlurmTransport:
    config = stack_info["slurmrestd"]
    return make_transport("rest", files="shared", base_url=config["url"], user=config["user"], token=config["token"])


@pytest.fixture
def cli(stack_info) -> SlurmTransport:
    return make_transport("local", user=stack_info["job_user"])


def submit(transport: SlurmTransport, stack_info, body: str | None = None, commands: list[list[str]] | None = None,
           **fields) -> tuple[int, str]:
    workdir = f"{stack_info['jobs_dir']}/watcher-tests/{uuid.uuid4().hex[:10]}"
    job = BatchJob(**{"name": "watcher-test", "account": stack_info["account"], "partition": None, "cpus": 1,
                      "memory": "64M", "time": "00:02:00", "gpus": 0, "workdir": workdir,
                      "commands": commands or [["bash", "-c", body]], **fields})
    transport.stage(workdir, {}, stack_info["job_user"])
    return transport.submit(job, render(job)), workdir


def test_many_jobs_cost_one_status_call_per_interval(rest, stack_info):
    job_ids = [submit(rest, stack_info, "sleep 1")[0] for _ in range(JOBS)]
    failing = submit(rest, stack_info, "exit 3")[0]
    rpcs_before = job_info_rpcs()
    began = time.monotonic()

    async def watch_all():
        watcher = ClusterWatcher(lambda: rest, PollSettings(interval_s=1.0))
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
    # the stack's slurm_job_reconciler asks once per 10 s while the triggerer watches nothing
    reconciler = elapsed / 10 + 1
    assert rpcs <= rounds + 2 + reconciler, f"slurmctld saw {rpcs} job-info RPCs for {rounds} polling rounds"
    assert watcher.stats.accounting_calls == 0, "all jobs were still known to the controller"


def node_state(stack_info) -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-n", stack_info["node"], "-o", "%T"], capture_output=True,
                          text=True, check=True).stdout.strip().lower()


def set_node(state: str, stack_info, check: bool = True) -> None:
    """A downed node refuses ``resume`` while its killed jobs are still completing: try for a while."""
    command = ["scontrol", "update", f"nodename={stack_info['node']}", f"state={state}",
               *(["reason=watcher test: node failure"] if state == "down" else [])]
    if state == "resume" and "down" not in node_state(stack_info):
        return  # slurmd re-registered and the node returned to service on its own
    deadline = time.monotonic() + 30
    while (done := subprocess.run(command, capture_output=True, text=True)).returncode != 0:
        if time.monotonic() > deadline:
            assert not check, f"{' '.join(command)}: {done.stderr}"
            return
        time.sleep(1)


async def updates_until_final(watcher: ClusterWatcher, watch: Watch, on_status) -> list:
    seen = []
    async for update in watcher.watch(watch):
        if update.kind == "status":
            seen.append(update.status)
            await asyncio.to_thread(on_status, update.status)
    return seen


def test_a_node_failure_ends_a_job_as_node_fail_and_requeues_a_requeueable_one(cli, stack_info):
    """A node set down kills its jobs: NODE_FAIL is final without --requeue; with it the job comes
    back under the same id, runs again once the node returns, and the watcher waits it out."""
    plain, _ = submit(cli, stack_info, "sleep 60")
    requeued, workdir = submit(cli, stack_info, 'echo "run $SLURM_RESTART_COUNT"; '
                                                '[ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] || sleep 60', requeue=True)
    injected = {"downed": False, "resumed": False}

    def inject(status) -> None:
        if status.state == "RUNNING" and not injected["downed"] and all(
                cli.jobs()[job].state == "RUNNING" for job in (plain, requeued)):
            injected["downed"] = True
            set_node("down", stack_info)
        elif injected["downed"] and not injected["resumed"] and status.restarts >= 1:
            injected["resumed"] = True
            set_node("resume", stack_info)

    async def watch_both():
        watcher = ClusterWatcher(lambda: cli, PollSettings(interval_s=1.0))
        return await asyncio.wait_for(asyncio.gather(
            watcher.wait(plain), updates_until_final(watcher, Watch(requeued, requeue=True), inject)), 240)

    try:
        plain_final, requeued_updates = asyncio.run(watch_both())
    finally:
        if not injected["resumed"]:
            set_node("resume", stack_info, check=False)  # already up unless the test stopped half-way
        for job in (plain, requeued):
            subprocess.run(["scancel", str(job)], check=False)
    assert injected["downed"], "the node was never set down"
    assert plain_final.state == "NODE_FAIL"
    final = cli.final(requeued)
    assert final is not None and final.state == "COMPLETED", final
    assert max(status.restarts for status in requeued_updates) >= 1
    assert cli.read_logs({requeued: (f"{workdir}/slurm-{requeued}.out", 0)})[requeued].count(b"run ") >= 1


def test_the_time_limit_warning_reaches_the_training_process(cli, stack_info):
    """``--signal=B:USR2@N``: the batch shell passes USR2 on; the training code checkpoints and ends well."""
    training = ("import signal, sys, time\n"
                "def checkpoint(number, frame):\n"
                "    print('USR2: checkpoint written', flush=True); sys.exit(0)\n"
                "signal.signal(signal.SIGUSR2, checkpoint)\n"
                "print('training', flush=True)\n"
                "time.sleep(120)\n")
    # python runs in the foreground of the batch shell, as a pipeline's train.py does
    job_id, workdir = submit(cli, stack_info, commands=[["python3", "-c", training]], time="00:01:00",
                             signal="B:USR2@55")
    status = asyncio.run(asyncio.wait_for(ClusterWatcher(lambda: cli, PollSettings(interval_s=2.0)).wait(job_id),
                                          150))
    log = cli.read_logs({job_id: (f"{workdir}/slurm-{job_id}.out", 0)})[job_id].decode()
    assert "USR2: checkpoint written" in log, log
    assert status.state == "COMPLETED", f"{status}: the job ended before its limit, with the checkpoint"
