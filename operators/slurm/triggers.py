"""Waiting for Slurm jobs in the triggerer, without blocking its event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from operators.slurm.rest import SlurmRestClient, SlurmRestError


class SlurmJobTrigger(BaseTrigger):
    """Fires once the job has left the controller's active states.

    Transient controller errors are retried until ``unreachable_limit_s`` passes without one good
    answer; the operator then reads the final state from accounting, never assuming success.
    """

    def __init__(self, conn_id: str, job_id: int, poll_interval_s: float = 2.0,
                 unreachable_limit_s: float = 600.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.job_id = job_id
        self.poll_interval_s = poll_interval_s
        self.unreachable_limit_s = unreachable_limit_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("operators.slurm.triggers.SlurmJobTrigger", {
            "conn_id": self.conn_id, "job_id": self.job_id, "poll_interval_s": self.poll_interval_s,
            "unreachable_limit_s": self.unreachable_limit_s})

    async def _client(self) -> SlurmRestClient:
        from operators.slurm.hooks import SlurmRestHook

        return await asyncio.to_thread(lambda: SlurmRestHook(self.conn_id).get_conn())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = await self._client()
        loop = asyncio.get_running_loop()
        last_good = loop.time()
        while True:
            try:
                status = await asyncio.to_thread(client.status, self.job_id)
                last_good = loop.time()
                if status.finished:
                    yield TriggerEvent({"job_id": self.job_id, "state": status.state})
                    return
            except (SlurmRestError, OSError) as error:
                if loop.time() - last_good > self.unreachable_limit_s:
                    yield TriggerEvent({"job_id": self.job_id, "state": "UNREACHABLE", "error": str(error)})
                    return
                self.log.warning("Slurm job %s: status not available (%s); retrying", self.job_id, error)
            await asyncio.sleep(self.poll_interval_s)
