"""Waiting for Slurm jobs in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators.deferral import resume_hold_s
from operators.slurm.model import ControllerUnreachable, JobStatus, SlurmError
from operators.slurm.reconciler import TaskIdentity, orphaned_jobs
from operators.slurm.script import JOB_ENV_FILE
from operators.slurm.transport import SlurmTransport
from operators.slurm.watcher import ClusterWatcher, PollSettings, Watch


def connection_transport(conn_id: str, status_max_age_s: float) -> SlurmTransport:
    """Read in the trigger's own task (a worker thread), where the triggerer serves connections. Its status
    answer is shared with the other triggerers on this host (operators.slurm.shared_status)."""
    from operators.slurm.hooks import SlurmHook

    return SlurmHook(conn_id).shared_status_transport(status_max_age_s)


def describe_wait(status: JobStatus) -> str:
    """What a user wants to know about a job that is not running yet, in squeue's words."""
    text = f"Slurm job {status.job_id} {status.state}"
    if status.reason:
        text += f" (reason: {status.reason})"
    if status.state == "PENDING" and status.start_time:
        text += f", expected start {status.start_time}"
    if status.restarts:
        text += f", requeued {status.restarts} time(s)"
    return text


class DeclaredTrigger(BaseTrigger):
    """A trigger whose dataclass fields are its arguments: ``serialize`` derives from them, so a new argument
    cannot be forgotten or retyped. The class path is the class's own: moving a trigger breaks the ones
    Airflow has stored."""

    def __post_init__(self) -> None:
        super().__init__()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", asdict(self)


@dataclass(eq=False, repr=False)
class SlurmJobTrigger(DeclaredTrigger):
    """Fires once the job has ended. All triggers of a cluster share one ``ClusterWatcher`` in the
    triggerer, so N deferred tasks cost one status call per interval, not N.

    While it waits it writes to the task log why a job is pending and when it should start, and
    the new lines of the job's output. Transient controller errors are retried with growing pauses
    until ``unreachable_limit_s``; the operator then reads the final state from accounting, never
    assuming success.
    """

    conn_id: str
    job_id: int
    poll_interval_s: float = 2.0
    unreachable_limit_s: float = 600.0
    env_file: str | None = None
    log_path: str | None = None
    requeue: bool = False
    max_restarts: int = 0
    submitted_at: str | None = None
    task_identity: str | None = None
    deferred_at: float | None = None  # epoch seconds, set by the operator as it defers

    async def run(self) -> AsyncIterator[TriggerEvent]:
        settings = PollSettings(interval_s=self.poll_interval_s, unreachable_limit_s=self.unreachable_limit_s)
        transport = await asyncio.to_thread(connection_transport, self.conn_id, self.poll_interval_s)
        watcher = ClusterWatcher.for_cluster(self.conn_id, lambda: transport, settings)
        since = datetime.fromisoformat(self.submitted_at) if self.submitted_at else None
        watch = Watch(self.job_id, self.requeue, self.log_path, since=since, interval_s=self.poll_interval_s,
                      unreachable_limit_s=self.unreachable_limit_s)
        over_limit = 0
        try:
            async for update in watcher.watch(watch):
                if update.kind == "log":
                    for line in update.text.decode(errors="replace").splitlines():
                        self.log.info("[job %s] %s", self.job_id, line)
                elif update.kind == "outage":
                    self.log.warning("%s", update.message)
                elif update.kind == "reachable":
                    self.log.info("%s", update.message)
                elif update.kind == "status" and update.status is not None:
                    if update.status.state != "RUNNING" or update.status.restarts:
                        self.log.info("%s", describe_wait(update.status))
                    if update.status.restarts > self.max_restarts and self.requeue:
                        # Slurm ignores a cancel while the job is being requeued (COMPLETING): ask again at
                        # every change until it has ended, and fail the task only then
                        over_limit = update.status.restarts
                        await self._cancel_quietly(transport)
                elif update.kind == "final" and update.status is not None:
                    await asyncio.sleep(resume_hold_s(self.deferred_at, time.time()))
                    if over_limit:
                        yield TriggerEvent({"job_id": self.job_id, "state": "RESTART_LIMIT",
                                            "error": f"requeued {over_limit} times, more than max_restarts="
                                                     f"{self.max_restarts}; the job was cancelled"})
                    else:
                        yield TriggerEvent({"job_id": self.job_id, "state": update.status.state})
                    return
        except ControllerUnreachable as error:
            yield TriggerEvent({"job_id": self.job_id, "state": "UNREACHABLE", "error": str(error)})
        except Exception as error:  # the shared poller failed: say so, do not hang
            yield TriggerEvent({"job_id": self.job_id, "state": "WATCH_FAILED", "error": repr(error)})

    async def on_kill(self) -> None:
        """A user marked the task failed or succeeded, cleared it or cancelled its run: cancel the job.

        Airflow 3.3 also calls this when a trigger moves to another triggerer (its task still deferred):
        that job must run on, so the task's state decides. If Airflow cannot say, the job is left to
        the reconciler, which cancels it once the task is recorded as ended."""
        still_deferred = await self._task_state_is("deferred")
        if still_deferred is not False:
            self.log.info("Slurm job %s keeps running: %s", self.job_id,
                          "its task is still deferred (the trigger moved to another triggerer)" if still_deferred
                          else "the task's state is unknown; the reconciler cancels it if the task has ended")
            return
        self.log.info("Task ended by a user: cancelling Slurm job %s", self.job_id)
        transport = await asyncio.to_thread(connection_transport, self.conn_id, self.poll_interval_s)
        await transport.async_cancel(self.job_id)
        if self.env_file:  # a job cancelled before it started never read (and removed) its credentials
            await transport.async_remove(self.env_file)


    async def _cancel_quietly(self, transport: SlurmTransport) -> None:
        try:
            await transport.async_cancel(self.job_id)
        except SlurmError as error:  # ended meanwhile, or mid-requeue: the next change asks again
            self.log.info("Cancelling Slurm job %s: %s", self.job_id, error)

    async def _task_state_is(self, state: str) -> bool | None:
        from asgiref.sync import sync_to_async

        identity = TaskIdentity.parse(self.task_identity or "")
        if identity is None:
            return False  # a trigger serialized before identities were passed: cancel, as before
        try:
            states = await sync_to_async(airflow_task_states)(identity.dag_id, [identity.run_id], [identity.task_id])
        except Exception as error:
            self.log.warning("Could not read the state of %s: %s", identity, error)
            return None
        return states.get(identity.run_id, {}).get(identity.state_key) == state


@dataclass(eq=False, repr=False)
class SlurmReconcileTrigger(DeclaredTrigger):
    """Cancels jobs whose Airflow task has ended: the safety net for a task marked failed, or a run
    cancelled, while no triggerer ran its ``SlurmJobTrigger`` (see ``operators.slurm.reconciler``).

    It reads the cluster's ``ClusterWatcher`` answers, so it adds no status call while tasks are
    watched; with nothing watched it asks every ``check_interval_s``. It ends after ``run_for_s``
    with the list of what it cancelled, and its continuous DAG starts the next one.
    """

    conn_id: str
    check_interval_s: float = 10.0
    run_for_s: float = 3600.0
    poll_interval_s: float = 2.0

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        transport = await asyncio.to_thread(connection_transport, self.conn_id, self.poll_interval_s)
        watcher = ClusterWatcher.for_cluster(self.conn_id, lambda: transport,
                                             PollSettings(interval_s=self.poll_interval_s))
        cancelled: list[dict[str, Any]] = []
        find_orphans = sync_to_async(orphaned_jobs)  # Airflow's task states come through the triggerer's API client
        try:
            async with asyncio.timeout(self.run_for_s):
                while True:
                    try:
                        async for snapshot in watcher.snapshots(self.check_interval_s):
                            for job, task_state in await find_orphans(snapshot.values(), airflow_task_states):
                                cancelled.append(await self._cancel(transport, job, task_state))
                    except Exception as error:  # an unreachable controller or API: keep the net up
                        self.log.warning("Slurm job reconciler: %s; trying again in %.0f s", error,
                                         self.check_interval_s)
                        await asyncio.sleep(self.check_interval_s)
        except TimeoutError:
            pass
        yield TriggerEvent({"conn_id": self.conn_id, "cancelled": cancelled, "ran_for_s": self.run_for_s})

    async def _cancel(self, transport: SlurmTransport, job: JobStatus, task_state: str) -> dict[str, Any]:
        self.log.warning("Cancelling Slurm job %s (%s): its task is %s in Airflow", job.job_id, job.comment,
                         task_state)
        try:
            await transport.async_cancel(job.job_id)
        except SlurmError as error:  # it ended meanwhile
            self.log.info("Slurm job %s: %s", job.job_id, error)
        if job.workdir:  # a job cancelled before it started never read (and removed) its credentials
            try:
                await transport.async_remove(f"{job.workdir}/{JOB_ENV_FILE}")
            except (SlurmError, OSError) as error:
                self.log.warning("Slurm job %s: its credentials file could not be removed: %s", job.job_id, error)
        return {"job_id": job.job_id, "task": job.comment, "task_state": task_state}


def airflow_task_states(dag_id: str, run_ids: list[str], task_ids: list[str]) -> dict[str, dict[str, str | None]]:
    """Task instance states from Airflow's execution API (what the triggerer may ask)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    return RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=run_ids, task_ids=task_ids)
