"""The triggerer's event loop never waits on Slurm: on the local and SSH transports the watcher's
``squeue``/``sacct``/log reads are asyncio subprocesses, not threads, and give the same answers as
the blocking calls the operator uses."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from operators.slurm.model import SlurmUnavailable
from operators.slurm.watcher import ClusterWatcher, PollSettings, Watch
from tests.integration.test_slurm_transports import Cluster, build_transport


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor (what ``asyncio.to_thread`` uses), recording what it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.functions: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        inner = fn.args[0] if isinstance(fn, functools.partial) else fn  # to_thread: partial(context.run, f)
        self.functions.append(getattr(inner, "__qualname__", repr(inner)))
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(params=["local", "ssh"])
def cluster(request: pytest.FixtureRequest, stack_info: dict[str, Any]) -> Cluster:
    setup = Cluster(request.param, build_transport(request.param, stack_info), request.node.originalname,
                    stack_info["job_user"])
    yield setup
    setup.cancel_leftovers()


def test_watching_a_job_runs_no_slurm_call_in_a_thread(cluster: Cluster):
    job = cluster.job([["bash", "-c", "for i in 1 2 3; do echo line $i; sleep 1; done"]])
    job_id = cluster.submit(job)
    transport = cluster.transport
    transport.jobs()  # an SSH master is up: opening it is the one blocking step, done once, off the loop

    async def watch() -> tuple[Any, list[bytes], list[str]]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        watcher = ClusterWatcher(lambda: transport, PollSettings(interval_s=0.5))
        chunks: list[bytes] = []
        final = None
        async for update in watcher.watch(Watch(job_id, log_path=f"{job.workdir}/slurm-{job_id}.out")):
            if update.kind == "log":
                chunks.append(update.text)
            elif update.kind == "final":
                final = update.status
        return final, chunks, executor.functions

    final, chunks, threaded = asyncio.run(watch())
    assert final is not None and final.state == "COMPLETED"
    assert b"line 3" in b"".join(chunks), "the log was read through the async path"
    slurm_calls = [name for name in threaded if not name.endswith("<lambda>")]  # the transport factory
    # local log files are read from disk in a thread (as aiofiles would); every Slurm call is a subprocess
    allowed = {"SharedFiles.read_logs"} if cluster.kind == "local" else set()
    assert set(slurm_calls) <= allowed, f"ran in a thread: {slurm_calls}"


def test_async_calls_answer_as_the_blocking_ones(cluster: Cluster):
    job = cluster.job([["bash", "-c", "echo hello from the job; exit 3"]])
    job_id = cluster.submit(job)
    record = cluster.final(job_id)
    transport = cluster.transport
    log = {job_id: (f"{job.workdir}/slurm-{job_id}.out", 0)}

    async def ask() -> tuple[Any, Any, Any]:
        return (await transport.async_jobs(), await transport.async_accounting([job_id]),
                await transport.async_read_logs(log))

    jobs, accounting, logs = asyncio.run(ask())
    assert jobs.get(job_id) == transport.jobs().get(job_id)
    assert accounting[job_id] == record and record.exit_code == 3
    assert logs == transport.read_logs(log) and b"hello from the job" in logs[job_id]


def test_a_command_that_outlives_its_timeout_is_killed_and_reported_transient(cluster: Cluster):
    runner = cluster.transport.control.runner
    runner.timeout_s = 1.0
    with pytest.raises(SlurmUnavailable, match="no answer in 1 s"):
        asyncio.run(runner.arun(["sleep", "30"]))
