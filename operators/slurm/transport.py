"""One interface to a Slurm cluster, whatever the way in: local commands, SSH, slurmrestd or pyslurm.

Every call that asks about jobs asks about all of them at once: ``jobs()`` is one controller query
(REST: one REQUEST_JOB_INFO; ``squeue``: one REQUEST_JOB_USER_INFO plus its partition and federation
lookups), ``accounting()`` one slurmdbd query, ``read_logs()`` one read per interval. That is what lets one
watcher per cluster serve any number of deferred tasks.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from operators.slurm.model import JobAccounting, JobStatus, SlurmError
from operators.slurm.script import BatchJob

LOG_READ_LIMIT = 64 * 1024  # bytes per job per interval: a chatty job cannot stall the watcher


def default_since() -> datetime:
    """An explicit ``--starttime``: without one, sacct only sees jobs that started today."""
    return datetime.now(UTC) - timedelta(days=7)


class SlurmTransport(ABC):
    """How the orchestrator talks to one cluster. Implementations must not import Airflow."""

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
        """One line for a connection test: the Slurm version and cluster this transport reaches."""

    def find_active(self, comment: str) -> list[JobStatus]:
        """Pending or running jobs carrying ``comment`` (a task's identity), newest first."""
        matching = [status for status in self.jobs().values() if status.comment == comment and not status.finished]
        return sorted(matching, key=lambda status: status.job_id, reverse=True)

    def final(self, job_id: int, since: datetime | None = None) -> JobAccounting | None:
        """The ended job's record; None while accounting has not written it."""
        record = self.accounting([job_id], since).get(job_id)
        return record if record is not None and record.state not in ("PENDING", "RUNNING", "REQUEUED") else None

    # The triggerer's waits. Transports whose calls are subprocesses or sockets override these with
    # native asyncio; the rest (a C library, local file reads) run in a worker thread, never on the loop.
    async def async_jobs(self) -> dict[int, JobStatus]:
        return await asyncio.to_thread(self.jobs)

    async def async_accounting(self, job_ids: Collection[int],
                               since: datetime | None = None) -> dict[int, JobAccounting]:
        return await asyncio.to_thread(self.accounting, job_ids, since)

    async def async_read_logs(self, requests: Mapping[int, tuple[str, int]]) -> dict[int, bytes]:
        return await asyncio.to_thread(self.read_logs, requests)

    async def async_cancel(self, job_id: int) -> None:
        await asyncio.to_thread(self.cancel, job_id)

    async def async_remove(self, path: str) -> None:
        await asyncio.to_thread(self.remove, path)

    # Files: on a cluster that shares its file system with the worker (a login node, the local factory)
    # they are written directly; the SSH transport overrides both methods.
    def stage(self, workdir: str, files: Mapping[str, bytes], owner: str | None) -> None:
        """Create ``workdir`` afresh with ``files`` (all 0600), owned by the job's user."""
        target = Path(workdir)
        if target.exists():
            shutil.rmtree(target)
        created = [target, *(parent for parent in target.parents if not parent.exists())]
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, content in files.items():
            fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
        if owner and os.geteuid() == 0:
            account = pwd.getpwnam(owner)
            for path in [*created, *target.iterdir()]:  # only what this call made: never a folder above
                os.chown(path, account.pw_uid, account.pw_gid)

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def fetch_folder(self, path: str, destination: Path) -> None:
        """Copy a folder the job wrote (an offline MLflow store) to ``destination`` on this machine."""
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: no such folder on the cluster")
        shutil.copytree(path, destination, dirs_exist_ok=True)

    def tail(self, path: str, nbytes: int) -> bytes:
        """The last ``nbytes`` of a log: a failure message shows the end, never the whole file."""
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - nbytes))
                return handle.read(nbytes)
        except FileNotFoundError:
            return b""

    def read_logs(self, requests: Mapping[int, tuple[str, int]]) -> dict[int, bytes]:
        """New bytes of each job's log from its offset, at most ``LOG_READ_LIMIT``; never the whole file."""
        chunks: dict[int, bytes] = {}
        for job_id, (path, offset) in requests.items():
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunks[job_id] = handle.read(LOG_READ_LIMIT)
            except FileNotFoundError:
                chunks[job_id] = b""
        return chunks


def transport_kinds() -> dict[str, type[SlurmTransport]]:
    from operators.slurm.cli import CliTransport, SshTransport
    from operators.slurm.pyslurm_transport import PyslurmTransport
    from operators.slurm.rest import RestTransport

    return {cls.kind: cls for cls in (CliTransport, SshTransport, RestTransport, PyslurmTransport)}


def make_transport(kind: str, **settings: Any) -> SlurmTransport:
    """The transport a connection names; unknown names fail with the list of valid ones."""
    kinds = transport_kinds()
    if kind not in kinds:
        raise SlurmError(f"unknown Slurm transport {kind!r}: choose one of {', '.join(sorted(kinds))}")
    return kinds[kind](**settings)
