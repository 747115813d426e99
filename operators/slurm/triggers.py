"""Waiting for Slurm jobs in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators.slurm.breaker import ControllerUnreachable
from operators.slurm.model import JobStatus
from operators.slurm.transport import SlurmTransport
from operators.slurm.watcher import ClusterWatcher, PollSettings, Watch


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


class SlurmJobTrigger(BaseTrigger):
    """Fires once the job has ended. All triggers of a cluster share one ``ClusterWatcher`` in the
    triggerer, so N deferred tasks cost one status call per interval, not N.

    While it waits it writes to the task log why a job is pending and when it should start, and
    the new lines of the job's output. Transient controller errors are retried behind the
    cluster's circuit breaker until ``unreachable_limit_s``; the operator then reads the final
    state from accounting, never assuming success.
    """

    def __init__(self, conn_id: str, job_id: int, poll_interval_s: float = 2.0,
                 unreachable_limit_s: float = 600.0, env_file: str | None = None, log_path: str | None = None,
                 requeue: bool = False, max_restarts: int = 0, submitted_at: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.job_id = job_id
        self.env_file = env_file
        self.log_path = log_path
        self.poll_interval_s = poll_interval_s
        self.unreachable_limit_s = unreachable_limit_s
        self.requeue = requeue
        self.max_restarts = max_restarts
        self.submitted_at = submitted_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("operators.slurm.triggers.SlurmJobTrigger", {
            "conn_id": self.conn_id, "job_id": self.job_id, "poll_interval_s": self.poll_interval_s,
            "unreachable_limit_s": self.unreachable_limit_s, "env_file": self.env_file, "log_path": self.log_path,
            "requeue": self.requeue, "max_restarts": self.max_restarts, "submitted_at": self.submitted_at})

    def _transport(self) -> SlurmTransport:
        from operators.slurm.hooks import SlurmHook

        return SlurmHook(self.conn_id).get_transport()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        settings = PollSettings(interval_s=self.poll_interval_s, unreachable_limit_s=self.unreachable_limit_s)
        # the connection is read in the trigger's own task, where the triggerer serves it
        transport = await asyncio.to_thread(self._transport)
        watcher = ClusterWatcher.for_cluster(self.conn_id, lambda: transport, settings)
        since = datetime.fromisoformat(self.submitted_at) if self.submitted_at else None
        watch = Watch(self.job_id, self.requeue, self.log_path, since=since)
        try:
            async for update in watcher.watch(watch):
                if update.kind == "log":
                    for line in update.text.decode(errors="replace").splitlines():
                        self.log.info("[job %s] %s", self.job_id, line)
                elif update.kind == "status" and update.status is not None:
                    if update.status.state != "RUNNING" or update.status.restarts:
                        self.log.info("%s", describe_wait(update.status))
                    if update.status.restarts > self.max_restarts and self.requeue:
                        await asyncio.to_thread(transport.cancel, self.job_id)
                        yield TriggerEvent({"job_id": self.job_id, "state": "RESTART_LIMIT",
                                            "error": f"requeued {update.status.restarts} times, "
                                                     f"more than max_restarts={self.max_restarts}"})
                        return
                elif update.kind == "final" and update.status is not None:
                    yield TriggerEvent({"job_id": self.job_id, "state": update.status.state})
                    return
        except ControllerUnreachable as error:
            yield TriggerEvent({"job_id": self.job_id, "state": "UNREACHABLE", "error": str(error)})
        except Exception as error:  # the shared poller failed: say so, do not hang
            yield TriggerEvent({"job_id": self.job_id, "state": "WATCH_FAILED", "error": repr(error)})

    async def on_kill(self) -> None:
        """A user marked the task failed or succeeded, or cleared it: cancel the job. Airflow does
        not call this on a triggerer restart or redistribution, so those leave the job running."""
        self.log.info("Task killed by a user: cancelling Slurm job %s", self.job_id)
        transport = await asyncio.to_thread(self._transport)
        await asyncio.to_thread(transport.cancel, self.job_id)
        if self.env_file:  # a job cancelled before it started never read (and removed) its credentials
            await asyncio.to_thread(transport.remove, self.env_file)
