"""One poller per cluster: every deferred Slurm task of a cluster waits on the same loop.

Per-job polling makes N status calls per interval and floods slurmctld (peers' known defect).
Here the triggerer holds one ``ClusterWatcher`` per connection; each interval it asks the
controller for all jobs in a single call and wakes the tasks whose jobs ended. Jobs the controller
has forgotten (after MinJobAge) are looked up in accounting one by one: that happens once per job.

The interval adapts to the controller: it is at least ten times the last answer time, and a
per-cluster budget caps status calls per minute. No call blocks the event loop (threads).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from operators.slurm.rest import TERMINAL_STATES, JobStatus, SlurmRestClient, SlurmRestError

log = logging.getLogger(__name__)


class ControllerUnreachable(RuntimeError):
    """The controller gave no good answer for longer than the configured limit."""


@dataclass
class PollSettings:
    interval_s: float = 2.0
    max_interval_s: float = 60.0
    calls_per_minute: int = 30  # below Slurm's default RPC rate limit (bucket 30, refill 2/s)
    unreachable_limit_s: float = 600.0


@dataclass
class WatcherStats:
    status_calls: int = 0
    accounting_calls: int = 0
    failures: int = 0
    recent_calls: deque = field(default_factory=lambda: deque(maxlen=1000))


class ClusterWatcher:
    _by_cluster: ClassVar[dict[tuple[str, int], ClusterWatcher]] = {}

    def __init__(self, client_factory: Callable[[], SlurmRestClient], settings: PollSettings | None = None) -> None:
        self.client_factory = client_factory
        self.settings = settings or PollSettings()
        self.stats = WatcherStats()
        self._waiters: dict[int, list[asyncio.Future[JobStatus]]] = {}
        self._task: asyncio.Task | None = None
        self._client: SlurmRestClient | None = None

    @classmethod
    def for_cluster(cls, key: str, client_factory: Callable[[], SlurmRestClient],
                    settings: PollSettings | None = None) -> ClusterWatcher:
        """The watcher of this cluster in the running event loop (the triggerer's)."""
        loop_key = (key, id(asyncio.get_running_loop()))
        watcher = cls._by_cluster.get(loop_key)
        if watcher is None:
            watcher = cls._by_cluster[loop_key] = cls(client_factory, settings)
        return watcher

    async def wait(self, job_id: int) -> JobStatus:
        """Until the job has ended; its final status from the controller or accounting."""
        future: asyncio.Future[JobStatus] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._guarded_poll_loop())
        try:
            return await future
        finally:
            waiters = self._waiters.get(job_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(job_id, None)

    async def _call(self, function, *args):
        if self._client is None:
            self._client = await asyncio.to_thread(self.client_factory)
        return await asyncio.to_thread(function, self._client, *args)

    def _next_interval(self, answer_s: float) -> float:
        settings = self.settings
        interval = min(max(settings.interval_s, 10 * answer_s), settings.max_interval_s)
        calls = self.stats.recent_calls
        if len(calls) >= settings.calls_per_minute:  # budget: the oldest of the last N calls must be > 60 s ago
            oldest = calls[-settings.calls_per_minute]
            interval = max(interval, 60.0 - (time.monotonic() - oldest))
        return interval

    async def _guarded_poll_loop(self) -> None:
        """A bug or an unexpected answer must fail the waiting tasks, never leave them hanging."""
        try:
            await self._poll_loop()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("Slurm watcher failed")
            self._fail_all(error)

    async def _poll_loop(self) -> None:
        last_good = time.monotonic()
        backoff = self.settings.interval_s
        while self._waiters:
            began = time.monotonic()
            try:
                self.stats.status_calls += 1
                self.stats.recent_calls.append(began)
                statuses = await self._call(SlurmRestClient.statuses)
            except (SlurmRestError, OSError) as error:
                self.stats.failures += 1
                if time.monotonic() - last_good > self.settings.unreachable_limit_s:
                    self._fail_all(ControllerUnreachable(
                        f"no answer from the Slurm controller for {self.settings.unreachable_limit_s:.0f} s: {error}"))
                    return
                backoff = min(backoff * 2, self.settings.max_interval_s)
                log.warning("Slurm controller did not answer (%s); next try in %.0f s", error, backoff)
                await asyncio.sleep(backoff)
                continue
            last_good, backoff = time.monotonic(), self.settings.interval_s
            answer_s = last_good - began
            for job_id in list(self._waiters):
                status = statuses.get(job_id) or await self._from_accounting(job_id)
                if status is not None and status.finished:
                    for future in self._waiters.get(job_id, []):
                        if not future.done():
                            future.set_result(status)
            await asyncio.sleep(self._next_interval(answer_s))

    async def _from_accounting(self, job_id: int) -> JobStatus | None:
        """A job the controller no longer lists: accounting has its final state (never assume success)."""
        self.stats.accounting_calls += 1
        try:
            record = await self._call(SlurmRestClient.accounting, job_id)
        except SlurmRestError:
            return None  # not recorded yet: look again next round
        state = record.get("state", {}).get("current", "")
        if state not in TERMINAL_STATES:
            return None
        exit_info = record.get("exit_code", {})
        return JobStatus(job_id, state, exit_info.get("return_code"), record.get("state", {}).get("reason", ""))

    def _fail_all(self, error: Exception) -> None:
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
