"""One interface to a Slurm cluster: a control channel for jobs, a file channel for their files.

The two are separate because they are separate on a real site: the controller may be reached through
local commands, SSH, slurmrestd or pyslurm, and job files through a shared file system or SSH (later
S3), in any combination. ``operators.slurm.transports`` composes them from a connection's settings;
this module knows no implementation.

Every call that asks about jobs asks about all of them at once: ``jobs()`` is one controller query
(REST: one REQUEST_JOB_INFO; ``squeue``: one REQUEST_JOB_USER_INFO plus its partition and federation
lookups), ``accounting()`` one slurmdbd query, ``read_logs()`` one read per interval. That is what lets one
watcher per cluster serve any number of deferred tasks.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from operators.slurm.budget import SSHARE_COMMAND, Allocation, parse_sshare
from operators.slurm.model import JobAccounting, JobStatus, settled
from operators.slurm.script import BatchJob

LOG_READ_LIMIT = 64 * 1024  # bytes per job per interval: a chatty job cannot stall the watcher
LogRequests = Mapping[int, tuple[str, int]]  # job id -> (log path, offset already read)


def default_since() -> datetime:
    """An explicit ``--starttime``: without one, sacct only sees jobs that started today."""
    return datetime.now(UTC) - timedelta(days=7)


class ControlChannel(ABC):
    """How the orchestrator asks the controller and slurmdbd about jobs. Implementations must not import
    Airflow, and know nothing of where job files live."""

    kind: ClassVar[str]

    @abstractmethod
    def submit(self, job: BatchJob, script: str) -> int:
        """Submit the rendered script; the job's id."""

    @abstractmethod
    def jobs(self) -> dict[int, JobStatus]:
        """Every job the controller lists for us, in one call."""

    @abstractmethod
    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        """Accounting records of the given jobs, in one call; jobs not recorded yet are missing."""

    @abstractmethod
    def cancel(self, job_id: int) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """One line for a connection test: the Slurm version and cluster this channel reaches."""

    def allocation(self, account: str) -> list[Allocation] | None:
        """What ``account`` may still use (``GrpTRESMins`` limits and usage); None when this way in cannot tell."""
        return None

    def find_active(self, comment: str) -> list[JobStatus]:
        """Pending or running jobs carrying ``comment`` (a task's identity), newest first."""
        matching = [status for status in self.jobs().values() if status.comment == comment and not status.finished]
        return sorted(matching, key=lambda status: status.job_id, reverse=True)

    def final(self, job_id: int, since: datetime | None = None) -> JobAccounting | None:
        """The ended job's record; None while accounting has not written it, or not consistently yet."""
        record = self.accounting([job_id], since).get(job_id)
        return record if record is not None and settled(record) else None

    # The triggerer's waits. Channels whose calls are subprocesses override these with native asyncio;
    # the rest (HTTP, a C library) run in a worker thread, never on the loop.
    async def async_jobs(self) -> dict[int, JobStatus]:
        return await asyncio.to_thread(self.jobs)

    async def async_accounting(self, job_ids: Collection[int],
                               since: datetime | None = None) -> dict[int, JobAccounting]:
        return await asyncio.to_thread(self.accounting, job_ids, since)

    async def async_cancel(self, job_id: int) -> None:
        await asyncio.to_thread(self.cancel, job_id)


class FileChannel(ABC):
    """How a job's files travel between the Airflow worker and the cluster: staging its folder, reading its
    log, fetching what it wrote. Implementations must not import Airflow."""

    @abstractmethod
    def stage(self, workdir: str, files: Mapping[str, bytes], owner: str | None) -> None:
        """Create ``workdir`` afresh with ``files`` (all 0600), owned by the job's user."""

    @abstractmethod
    def remove(self, path: str) -> None: ...

    @abstractmethod
    def fetch_folder(self, path: str, destination: Path) -> None:
        """Copy a folder the job wrote (an offline MLflow store) to ``destination`` on this machine."""

    @abstractmethod
    def tail(self, path: str, nbytes: int) -> bytes:
        """The last ``nbytes`` of a log: a failure message shows the end, never the whole file."""

    @abstractmethod
    def read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        """New bytes of each job's log from its offset, at most ``LOG_READ_LIMIT``; never the whole file."""

    async def async_read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        return await asyncio.to_thread(self.read_logs, requests)

    async def async_remove(self, path: str) -> None:
        await asyncio.to_thread(self.remove, path)


class SlurmTransport:
    """One cluster as the orchestrator reaches it: jobs through ``control``, their files through ``files``."""

    def __init__(self, control: ControlChannel, files: FileChannel) -> None:
        self.control = control
        self.files = files

    @property
    def kind(self) -> str:
        """The connection's ``transport``: how the controller is reached."""
        return self.control.kind

    def __repr__(self) -> str:
        return f"SlurmTransport({self.control!r}, {self.files!r})"

    def describe(self) -> str:
        return self.control.describe()

    def allocation(self, account: str) -> list[Allocation] | None:
        """From the controller's way in, else from a command on the login node the files go through."""
        found = self.control.allocation(account)
        runner = getattr(self.files, "runner", None)
        if found is None and runner is not None:
            found = parse_sshare(runner.run([*SSHARE_COMMAND, f"--accounts={account}"]), account)
        return found

    # ------------------------------------------------------------------ jobs: the control channel
    def submit(self, job: BatchJob, script: str) -> int:
        return self.control.submit(job, script)

    def jobs(self) -> dict[int, JobStatus]:
        return self.control.jobs()

    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        return self.control.accounting(job_ids, since)

    def cancel(self, job_id: int) -> None:
        self.control.cancel(job_id)

    def find_active(self, comment: str) -> list[JobStatus]:
        return self.control.find_active(comment)

    def final(self, job_id: int, since: datetime | None = None) -> JobAccounting | None:
        return self.control.final(job_id, since)

    async def async_jobs(self) -> dict[int, JobStatus]:
        return await self.control.async_jobs()

    async def async_accounting(self, job_ids: Collection[int],
                               since: datetime | None = None) -> dict[int, JobAccounting]:
        return await self.control.async_accounting(job_ids, since)

    async def async_cancel(self, job_id: int) -> None:
        await self.control.async_cancel(job_id)

    # ------------------------------------------------------------------ files: the file channel
    def stage(self, workdir: str, files: Mapping[str, bytes], owner: str | None) -> None:
        self.files.stage(workdir, files, owner)

    def remove(self, path: str) -> None:
        self.files.remove(path)

    def fetch_folder(self, path: str, destination: Path) -> None:
        self.files.fetch_folder(path, destination)

    def tail(self, path: str, nbytes: int) -> bytes:
        return self.files.tail(path, nbytes)

    def read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        return self.files.read_logs(requests)

    async def async_read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        return await self.files.async_read_logs(requests)

    async def async_remove(self, path: str) -> None:
        await self.files.async_remove(path)
