"""A small slurmrestd client (JWT auth). Imports without Airflow, so job-side code can use it too.

Slurm 22.05 serves OpenAPI v0.0.36-38; newer Slurm v0.0.40+. The version is a constructor
argument until version negotiation lands with the transport work.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from operators.slurm.script import BatchJob

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                             "BOOT_FAIL", "DEADLINE", "PREEMPTED"})


class SlurmRestError(RuntimeError):
    """slurmrestd refused a request; the message carries Slurm's own error text."""


@dataclass(frozen=True)
class JobStatus:
    job_id: int
    state: str
    exit_code: int | None
    reason: str

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


def _status(job: dict[str, Any]) -> JobStatus:
    raw_exit = job.get("exit_code")
    exit_code = raw_exit >> 8 if isinstance(raw_exit, int) else None  # a wait status: 768 = exit 3
    return JobStatus(int(job["job_id"]), job["job_state"], exit_code, job.get("state_reason", ""))


class SlurmRestClient:
    def __init__(self, base_url: str, user: str, token: str, api_version: str = "v0.0.38",
                 timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._token = token
        self.api_version = api_version
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never show the token
        return f"SlurmRestClient({self.base_url!r}, user={self.user!r}, api={self.api_version})"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._token,
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise SlurmRestError(f"{method} {path}: HTTP {error.code}: {error.read()[:500].decode()}") from None
        errors = [e for e in answer.get("errors", []) if e.get("error_number", e.get("errno", 0))]
        if errors:
            raise SlurmRestError(f"{method} {path}: {errors}")
        return answer

    def submit(self, script: str, **job: Any) -> int:
        """Submit a batch script; ``job`` holds the job description (name, account, partition, ...)."""
        job.setdefault("environment", {"PATH": "/usr/local/bin:/usr/bin:/bin"})
        answer = self._call("POST", f"/slurm/{self.api_version}/job/submit", {"job": job, "script": script})
        return int(answer["job_id"])

    def status(self, job_id: int) -> JobStatus:
        """The controller's view (exit code is right even on 22.05, unlike JSON sacct)."""
        jobs = self._call("GET", f"/slurm/{self.api_version}/job/{job_id}").get("jobs", [])
        if not jobs:
            raise SlurmRestError(f"job {job_id} is not known to the controller")
        return _status(jobs[0])

    def find_active(self, comment: str) -> list[dict[str, Any]]:
        """Pending or running jobs carrying ``comment`` (a task's identity), newest first."""
        jobs = self._call("GET", f"/slurm/{self.api_version}/jobs").get("jobs", [])
        active = [job for job in jobs if job.get("comment") == comment and job["job_state"] not in TERMINAL_STATES]
        return sorted(active, key=lambda job: int(job["job_id"]), reverse=True)

    def statuses(self) -> dict[int, JobStatus]:
        """Every job the controller knows, in one call (one REQUEST_JOB_INFO for slurmctld)."""
        jobs = self._call("GET", f"/slurm/{self.api_version}/jobs").get("jobs", [])
        return {int(job["job_id"]): _status(job) for job in jobs}

    def accounting(self, job_id: int) -> dict[str, Any]:
        """The job as slurmdbd recorded it: elapsed time, resources, steps."""
        jobs = self._call("GET", f"/slurmdb/{self.api_version}/job/{job_id}").get("jobs", [])
        if not jobs:
            raise SlurmRestError(f"job {job_id} has no accounting record yet")
        return jobs[0]

    def wait_finished(self, job_id: int, poll_interval_s: float = 1.0, timeout_s: float | None = None) -> JobStatus:
        """Poll one job until it ends (for callers outside the triggerer); TimeoutError after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not (status := self.status(job_id)).finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Slurm job {job_id} still {status.state} after {timeout_s:.0f} s")
            time.sleep(poll_interval_s)
        return status

    def final_accounting(self, job_id: int, timeout_s: float = 15.0) -> dict[str, Any] | None:
        """slurmdbd's record of an ended job; it lags the controller by a moment. None if it never comes."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                record = self.accounting(job_id)
                if record.get("state", {}).get("current") not in ("RUNNING", "PENDING"):
                    return record
            except SlurmRestError:
                pass
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    def cancel(self, job_id: int) -> None:
        self._call("DELETE", f"/slurm/{self.api_version}/job/{job_id}")


def _megabytes(memory: str) -> int:
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    number, unit = (memory[:-1], memory[-1]) if memory[-1] in units else (memory, "M")
    return max(1, int(float(number) * units[unit]))


def _minutes(time_limit: str) -> int:
    if time_limit.isdigit():
        return int(time_limit)
    days, _, clock = time_limit.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def rest_job_fields(job: BatchJob) -> dict[str, Any]:
    """The job description slurmrestd wants: it ignores ``#SBATCH`` lines in the script."""
    fields: dict[str, Any] = {
        "name": job.name, "current_working_directory": job.workdir, "standard_output": job.output,
        "cpus_per_task": job.cpus, "memory_per_node": _megabytes(job.memory), "time_limit": _minutes(job.time),
        "tasks": 1, "comment": job.comment,
    }
    if job.account:
        fields["account"] = job.account
    if job.partition:
        fields["partition"] = job.partition
    if job.gpus:
        fields["gres"] = f"gpu:{job.gpus}"
    return fields


def max_rss_bytes(accounting: dict[str, Any]) -> int | None:
    """Largest resident memory of any step, from a slurmdbd job record."""
    peaks = [entry["count"] for step in accounting.get("steps", [])
             for entry in step.get("tres", {}).get("requested", {}).get("max", []) if entry.get("type") == "mem"]
    return max(peaks) if peaks else None
