"""One poller per cluster: every deferred Slurm task of a cluster waits on the same loop.

Per-job polling makes N status calls per interval and floods slurmctld (peers' known defect).
Here the triggerer holds one ``ClusterWatcher`` per connection. Each interval it makes one
``jobs()`` call for all jobs, one ``accounting()`` call for the jobs the controller has already
forgotten (never assuming success), and one ``read_logs()`` call for the new bytes of running jobs'
logs. Each watch receives updates: status changes (pending reason, expected start), log chunks,
and the final status.

The interval adapts to the controller: at least ten times the last answer time, and a
per-cluster budget caps status calls per minute. No call blocks the event loop: the command-line and
SSH transports run ``squeue``/``sacct``/``ssh`` as asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from operators.slurm.model import JobStatus, SlurmUnavailable
from operators.slurm.retry import RetryWithDeadline
from operators.slurm.transport import SlurmTransport

log = logging.getLogger(__name__)
OUTAGE_REMINDER_S = 30.0
SILENCE_NOTICE_S = 10.0  # a status call unanswered this long is told as an outage
LOOP_LAG_S = 10.0  # how late a busy event loop (a triggerer with many triggers) may start the next call


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
    log_calls: int = 0
    failures: int = 0
    recent_calls: deque = field(default_factory=lambda: deque(maxlen=1000))


@dataclass
class Update:
    kind: str  # "status", "log", "final"; "outage" and "reachable" name the cluster's, in ``message``
    status: JobStatus | None = None
    text: bytes = b""
    message: str = ""


@dataclass
class Watch:
    job_id: int
    requeue: bool = False
    log_path: str | None = None
    offset: int = 0
    since: datetime | None = None
    # each task's own settings; None takes the watcher's (the first trigger's on this connection)
    interval_s: float | None = None
    unreachable_limit_s: float | None = None
    updates: asyncio.Queue[Update | BaseException] = field(default_factory=asyncio.Queue)
    last: JobStatus | None = None
    failed: bool = False

    def publish(self, status: JobStatus) -> None:
        seen = self.last
        if seen is None or (seen.state, seen.reason, seen.start_time, seen.restarts) != (
                status.state, status.reason, status.start_time, status.restarts):
            self.updates.put_nowait(Update("status", status))
        self.last = status


class ClusterWatcher:
    _by_cluster: ClassVar[dict[tuple[str, int], ClusterWatcher]] = {}

    def __init__(self, transport_factory: Callable[[], SlurmTransport], settings: PollSettings | None = None) -> None:
        self.transport_factory = transport_factory
        self.settings = settings or PollSettings()
        self.stats = WatcherStats()
        # one retry state paces the calls; each watch fails after its own unreachable limit
        self.retry = RetryWithDeadline(math.inf, self.settings.interval_s, self.settings.max_interval_s)
        self._watches: dict[int, list[Watch]] = {}
        self._listeners: list[asyncio.Queue[dict[int, JobStatus] | BaseException]] = []
        self._idle_interval_s = self.settings.max_interval_s
        self._wake = asyncio.Event()  # a first watch ends an idle pause at once
        self._task: asyncio.Task | None = None
        self._transport: SlurmTransport | None = None
        self._outage_told_at: float | None = None  # monotonic time of the last outage notice
        self._answered_at: datetime | None = None  # the last good answer: an outage began after it
        self._asked_at: datetime | None = None  # when the calls still unanswered began (a new watcher has no answer)
        self._pause_s = 0.0  # the pause after the last good answer

    @classmethod
    def for_cluster(cls, key: str, transport_factory: Callable[[], SlurmTransport],
                    settings: PollSettings | None = None) -> ClusterWatcher:
        """The watcher of this cluster in the running event loop (the triggerer's)."""
        loop_key = (key, id(asyncio.get_running_loop()))
        watcher = cls._by_cluster.get(loop_key)
        if watcher is None:
            watcher = cls._by_cluster[loop_key] = cls(transport_factory, settings)
        return watcher

    async def watch(self, watch: Watch) -> AsyncIterator[Update]:
        """Updates of one job until (and including) its final status."""
        if not self._watches:
            self._wake.set()
        self._watches.setdefault(watch.job_id, []).append(watch)
        self._ensure_polling()
        try:
            while True:
                update = await watch.updates.get()
                if isinstance(update, BaseException):
                    raise update
                yield update
                if update.kind == "final":
                    return
        finally:
            watches = self._watches.get(watch.job_id, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(watch.job_id, None)

    async def snapshots(self, idle_interval_s: float) -> AsyncIterator[dict[int, JobStatus]]:
        """Every answer of ``jobs()``, for a reconciler: it rides on the watches' calls, and while
        nothing is watched the loop polls only every ``idle_interval_s``."""
        latest: asyncio.Queue[dict[int, JobStatus] | BaseException] = asyncio.Queue(maxsize=1)
        self._listeners.append(latest)
        self._idle_interval_s = idle_interval_s
        self._ensure_polling()
        try:
            while True:
                snapshot = await latest.get()
                if isinstance(snapshot, BaseException):
                    raise snapshot
                yield snapshot
        finally:
            self._listeners.remove(latest)

    def _ensure_polling(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._guarded_poll_loop())

    async def wait(self, job_id: int, requeue: bool = False) -> JobStatus:
        """Until the job has ended: its final status."""
        async for update in self.watch(Watch(job_id, requeue)):
            if update.kind == "final" and update.status is not None:
                return update.status
        raise RuntimeError("watch ended without a final status")

    async def _call(self, method: str, *args: Any) -> Any:
        """A transport's ``async_`` method: the event loop never waits on Slurm."""
        if self._transport is None:
            self._transport = await asyncio.to_thread(self.transport_factory)
        return await getattr(self._transport, f"async_{method}")(*args)

    def _watch_list(self) -> list[Watch]:
        return [watch for watches in self._watches.values() for watch in watches]

    def _limit_s(self, watch: Watch) -> float:
        return self.settings.unreachable_limit_s if watch.unreachable_limit_s is None else watch.unreachable_limit_s

    def _next_interval(self, answer_s: float) -> float:
        settings = self.settings
        wanted = min((watch.interval_s for watch in self._watch_list() if watch.interval_s),
                     default=settings.interval_s)
        interval = min(max(wanted, 10 * answer_s), settings.max_interval_s)
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
        while self._watches or self._listeners:
            began = time.monotonic()
            try:
                await self._poll_telling_silence()
            except SlurmUnavailable as error:
                self.stats.failures += 1
                pause = self.retry.failure(error)
                self._tell_outage(error)
                await asyncio.sleep(self._fail_unreachable(error, pause))
                continue
            self._tell_reachable()
            self.retry.success()
            self._answered_at, self._asked_at = datetime.now(UTC), None
            interval = self._next_interval(time.monotonic() - began)
            self._pause_s = interval if self._watches else max(interval, self._idle_interval_s)
            await self._pause(self._pause_s)

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _poll_telling_silence(self) -> None:
        """A call through a dead link can hang until ssh's keep-alive gives up (45 s) and then succeed when the
        link is back: the tasks hear of the silence while it lasts, not only of calls that failed."""
        self._asked_at = self._asked_at or datetime.now(UTC)
        poll = asyncio.ensure_future(self._poll_once())
        while not (await asyncio.wait({poll}, timeout=SILENCE_NOTICE_S))[0]:
            self._tell_outage(SlurmUnavailable(f"a status call has had no answer for over {SILENCE_NOTICE_S:.0f} s"))
        poll.result()

    async def _poll_once(self) -> None:
        self.stats.status_calls += 1
        self.stats.recent_calls.append(time.monotonic())
        watched = {job_id: list(watches) for job_id, watches in self._watches.items() if watches}
        statuses: dict[int, JobStatus] = await self._call("jobs")  # watches added meanwhile wait a round
        self._publish_snapshot(dict(statuses))
        forgotten = [job_id for job_id in watched if job_id not in statuses]
        if forgotten:  # ended more than MinJobAge ago (or the controller restarted): accounting knows
            self.stats.accounting_calls += 1
            since = min((w.since for ws in watched.values() for w in ws if w.since), default=None)
            records = await self._call("accounting", forgotten, since)
            statuses.update({job_id: record.status for job_id, record in records.items()})
        current = {job_id: statuses[job_id] for job_id in watched if job_id in statuses}
        await self._forward_logs(watched, current)
        for job_id, status in current.items():
            for watch in watched[job_id]:
                watch.publish(status)
                if status.ended(watch.requeue):
                    watch.updates.put_nowait(Update("final", status))

    async def _forward_logs(self, watched: dict[int, list[Watch]], current: dict[int, JobStatus]) -> None:
        """New log bytes of started jobs, all in one read; a job's last bytes are read as it ends."""
        readers = {job_id: watches[0] for job_id, watches in watched.items()
                   if watches[0].log_path and job_id in current and current[job_id].state != "PENDING"}
        if not readers:
            return
        self.stats.log_calls += 1
        chunks = await self._call("read_logs",
                                  {job_id: (watch.log_path, watch.offset) for job_id, watch in readers.items()})
        for job_id, chunk in chunks.items():
            if not chunk:
                continue
            for watch in watched[job_id]:
                watch.offset += len(chunk)
                watch.updates.put_nowait(Update("log", text=chunk))

    def _tell_outage(self, error: Exception) -> None:
        """Every watch hears of an outage when it is noticed, and again every ``OUTAGE_REMINDER_S``."""
        now = time.monotonic()
        if self._outage_told_at is not None and now - self._outage_told_at < OUTAGE_REMINDER_S:
            return
        self._outage_told_at = now
        began = self._outage_began()
        silent_s = (datetime.now(UTC) - began).total_seconds()
        for watch in self._watch_list():
            if not watch.failed:
                watch.updates.put_nowait(Update("outage", message=(
                    f"the cluster is unreachable since {began.isoformat(timespec='seconds')} (no answer for "
                    f"{silent_s:.0f} s): {error}; still waiting for job {watch.job_id}, giving up after "
                    f"{self._limit_s(watch):.0f} s of failed calls")))

    def _outage_began(self) -> datetime:
        """The last good answer while polling went on (a call through a dead link can hang a while before it
        fails); the first unanswered call when the watcher had been idle since its last answer (minutes, maybe)."""
        answered, asked = self._answered_at, self._asked_at
        if asked is None:
            return answered or datetime.now(UTC) - timedelta(seconds=self.retry.down_s)
        if answered is None or (asked - answered).total_seconds() > self._pause_s + LOOP_LAG_S:
            return asked
        return answered

    def _tell_reachable(self) -> None:
        if self._outage_told_at is None:
            return
        self._outage_told_at = None
        for watch in self._watch_list():
            if not watch.failed:
                watch.updates.put_nowait(Update("reachable", message=(
                    f"the cluster answers again after {self.retry.down_s:.0f} s; job {watch.job_id} is watched "
                    "as before")))

    def _fail_unreachable(self, error: Exception, pause: float) -> float:
        """Fail the watches whose own limit has passed; the pause, shortened to the next limit due."""
        down_s = self.retry.down_s
        remaining = []
        for watch in self._watch_list():
            limit_s = self._limit_s(watch)
            if watch.failed:
                continue
            if down_s > limit_s:
                watch.failed = True
                watch.updates.put_nowait(self.retry.unreachable(error, limit_s))
            else:
                remaining.append(limit_s - down_s)
        return min([pause, *(left + 0.5 for left in remaining)])

    def _publish_snapshot(self, snapshot: dict[int, JobStatus] | BaseException) -> None:
        """Listeners get the newest answer; one they have not read yet is replaced, never queued up."""
        for latest in self._listeners:
            if latest.full():
                latest.get_nowait()
            latest.put_nowait(snapshot)

    def _fail_all(self, error: Exception) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.updates.put_nowait(error)
        self._publish_snapshot(error)
