"""What every Slurm transport answers with: job status, final accounting, and its errors.

Plain data, no Airflow: job-side code and ``factory`` commands use it too.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                             "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
# With --requeue Slurm puts a preempted or node-failed job back in the queue under the same id.
REQUEUE_STATES = frozenset({"PREEMPTED", "NODE_FAIL", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"})


class SlurmError(RuntimeError):
    """The root of every Slurm error; raised as itself when Slurm refused a request (in Slurm's own words)."""


class SlurmUnavailable(SlurmError):
    """The controller (or the way to it) did not answer: worth retrying with backoff."""


class ControllerUnreachable(SlurmError):
    """The controller gave no good answer for longer than the configured limit: retrying has ended."""


# Words Slurm, ssh and HTTP use when the controller is busy, restarting or unreachable.
TRANSIENT_PATTERNS = re.compile(
    r"socket timed out|unable to contact slurm controller|connection refused|connection reset|"
    r"temporarily unavailable|try again|slurm_persist_conn_open|timed out|broken pipe|"
    r"connection closed by|ssh: connect to host|kex_exchange_identification|mux_client|"
    r"control socket|http 50[234]|zero bytes were transmitted|"
    r"failed while looking for jobs|slurm_load_jobs?\b|slurm_ping",  # slurmrestd while slurmctld restarts
    re.IGNORECASE)


def is_transient(message: str) -> bool:
    return bool(TRANSIENT_PATTERNS.search(message))


@dataclass(frozen=True)
class JobStatus:
    """One job as the controller (or, once forgotten, accounting) sees it."""

    job_id: int
    state: str
    exit_code: int | None = None
    reason: str = ""
    start_time: str | None = None  # expected start while PENDING (``squeue --start``), actual once running
    restarts: int = 0
    comment: str = ""
    workdir: str = ""

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def ended(self, requeue: bool) -> bool:
        """Requeueable jobs come back under the same id after preemption or a node failure."""
        return self.finished and not (requeue and self.state in REQUEUE_STATES)


@dataclass(frozen=True)
class JobAccounting:
    """A finished job as accounting recorded it: what the pipeline reports as the job's cost."""

    job_id: int
    state: str
    exit_code: int | None
    reason: str = ""
    elapsed_s: int | None = None
    cpu_time_s: float | None = None  # TotalCPU: user + system time of all tasks
    max_rss_bytes: int | None = None
    gpus: int = 0
    gpu_hours: float | None = None  # allocated GPUs x elapsed
    energy_j: int | None = None  # only where the site runs an energy plugin
    restarts: int = 0
    user: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cost_line(self) -> str:
        """What the job used, for a task log; only what the site records (energy needs its plugin)."""
        parts = [f"elapsed {self.elapsed_s} s" if self.elapsed_s is not None else None,
                 f"CPU time {self.cpu_time_s:g} s" if self.cpu_time_s is not None else None,
                 f"MaxRSS {self.max_rss_bytes / 2**20:.0f} MiB" if self.max_rss_bytes is not None else None,
                 f"GPU-hours {self.gpu_hours:g}" if self.gpus else None,
                 f"energy {self.energy_j} J" if self.energy_j is not None else None]
        return ", ".join(part for part in parts if part) or "no usage recorded"

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.job_id, self.state, self.exit_code, self.reason, restarts=self.restarts)


def settled(record: JobAccounting) -> bool:
    """Whether an accounting record is a job's final word: ended, and its exit code agrees with its state.

    A FAILED job that "exited 0" or a COMPLETED one with another code is accounting caught between two
    writes (seen on a busy 2-core machine: FAILED 0 for a job that exited 3); it is never reported, so a
    wrong exit code cannot reach a task. The caller asks again, and after its deadline fails without one.
    """
    if record.state in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED"):
        return False
    if record.state == "FAILED":
        return bool(record.exit_code)
    if record.state == "COMPLETED":
        return record.exit_code == 0
    return True


def gpu_hours(gpus: int, elapsed_s: int | None) -> float | None:
    return None if elapsed_s is None else round(gpus * elapsed_s / 3600, 6)


def parse_tres(text: str) -> dict[str, str]:
    """``cpu=2,mem=1G,node=1,billing=2,gres/gpu=1`` → a dict."""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def tres_gpus(tres: dict[str, str]) -> int:
    return int(tres.get("gres/gpu", 0) or 0)
