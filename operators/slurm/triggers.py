"""Waiting for Slurm jobs in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators.slurm.rest import SlurmRestClient
from operators.slurm.watcher import ClusterWatcher, ControllerUnreachable, PollSettings


class SlurmJobTrigger(BaseTrigger):
    """Fires once the job has ended. All triggers of a cluster share one ``ClusterWatcher`` in the
    triggerer, so N deferred tasks cost one status call per interval, not N.

    Transient controller errors are retried with backoff until ``unreachable_limit_s`` passes
    without one good answer; the operator then reads the final state, never assuming success.
    """

    def __init__(self, conn_id: str, job_id: int, poll_interval_s: float = 2.0,
                 unreachable_limit_s: float = 600.0, env_file: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.job_id = job_id
        self.env_file = env_file
        self.poll_interval_s = poll_interval_s
        self.unreachable_limit_s = unreachable_limit_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("operators.slurm.triggers.SlurmJobTrigger", {
            "conn_id": self.conn_id, "job_id": self.job_id, "poll_interval_s": self.poll_interval_s,
            "unreachable_limit_s": self.unreachable_limit_s, "env_file": self.env_file})

    def _client(self) -> SlurmRestClient:
        from operators.slurm.hooks import SlurmRestHook

        return SlurmRestHook(self.conn_id).get_conn()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        settings = PollSettings(interval_s=self.poll_interval_s, unreachable_limit_s=self.unreachable_limit_s)
        # the connection is read in the trigger's own task, where the triggerer serves it
        client = await asyncio.to_thread(self._client)
        watcher = ClusterWatcher.for_cluster(self.conn_id, lambda: client, settings)
        try:
            status = await watcher.wait(self.job_id)
        except ControllerUnreachable as error:
            yield TriggerEvent({"job_id": self.job_id, "state": "UNREACHABLE", "error": str(error)})
            return
        except Exception as error:  # the shared poller failed: say so, do not hang
            yield TriggerEvent({"job_id": self.job_id, "state": "WATCH_FAILED", "error": repr(error)})
            return
        yield TriggerEvent({"job_id": self.job_id, "state": status.state})

    async def on_kill(self) -> None:
        """A user marked the task failed or succeeded, or cleared it: cancel the job. Airflow does
        not call this on a triggerer restart or redistribution, so those leave the job running."""
        self.log.info("Task killed by a user: cancelling Slurm job %s", self.job_id)
        client = await asyncio.to_thread(self._client)
        await asyncio.to_thread(client.cancel, self.job_id)
        if self.env_file:  # a job cancelled before it started never read (and removed) its credentials
            await asyncio.to_thread(Path(self.env_file).unlink, missing_ok=True)
