"""One status call per cluster per interval from a host, however many processes wait on the cluster there.

A triggerer holds one watcher per connection, which asks for all its jobs at once; but a production
deployment runs several triggerers (and a cluster may be reached by two connections, SSH and slurmrestd),
and a task that waits in its worker (an Edge worker on a login node, where the central triggerer cannot run
the site's commands) has a watcher of its own, in a process of its own. They share the answer instead: the
first whose copy is older than its interval asks the controller, under a file lock, and writes the answer
next to the lock; the others read it. The answer covers every job of the user, so one copy serves all of
them. Files are the user's own (mode 0600, in a folder only the user can enter). Processes on other hosts
(triggerers on two machines) each ask for themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from operators.slurm.model import JobStatus
from operators.slurm.transport import SlurmTransport

KEY = re.compile(r"[^A-Za-z0-9_.-]")
LOCK_RETRY_S = 0.05  # how often a waiting event loop tries the lock again


def snapshot_folder() -> Path:
    """The user's own folder for the copies: under ``XDG_RUNTIME_DIR`` if set, else the home's cache."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "aifactory-slurm-status"


class SharedStatusTransport:
    """``transport`` with its ``jobs`` answer shared between the processes of one user on one host."""

    def __init__(self, transport: SlurmTransport, cluster: str, user: str | None, max_age_s: float,
                 folder: Path | None = None) -> None:
        self.transport = transport
        self.max_age_s = max_age_s
        self.folder = folder or snapshot_folder()
        key = KEY.sub("_", f"{cluster or 'cluster'}-{user or os.getuid()}")
        self.file = self.folder / f"{key}.json"
        self.lock_file = self.folder / f"{key}.lock"
        self.calls = 0  # the status calls this process made itself

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def jobs(self) -> dict[int, JobStatus]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fresh = self._read_fresh()
            if fresh is not None:
                return fresh
            return self._keep(self.transport.jobs())

    async def async_jobs(self) -> dict[int, JobStatus]:
        """The same for an event loop (a triggerer's): the lock is tried, not waited on, so the loop never
        blocks; a copy another process writes while this one waits is taken as soon as it is there."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.lock_file, "a") as lock:
            while True:
                fresh = self._read_fresh()
                if fresh is not None:
                    return fresh
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_RETRY_S)
            fresh = self._read_fresh()
            if fresh is not None:
                return fresh
            return self._keep(await self.transport.async_jobs())

    def _keep(self, statuses: dict[int, JobStatus]) -> dict[int, JobStatus]:
        """The controller's own answer: counted, and written for the others."""
        self.calls += 1
        self._write(statuses)
        return statuses

    def _read_fresh(self) -> dict[int, JobStatus] | None:
        try:
            if time.time() - self.file.stat().st_mtime >= self.max_age_s:
                return None
            rows = json.loads(self.file.read_text())
            return {int(row["job_id"]): JobStatus(**row) for row in rows}
        except (OSError, ValueError, TypeError, KeyError):
            return None  # none yet, or unreadable: ask the controller

    def _write(self, statuses: dict[int, JobStatus]) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".status-")
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(lambda: Path(temporary).unlink(missing_ok=True))
            with os.fdopen(handle, "w") as out:
                json.dump([asdict(status) for status in statuses.values()], out)
            os.replace(temporary, self.file)
