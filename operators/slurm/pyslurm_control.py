"""pyslurm as a control channel, for sites that build it against their own libslurm (no subprocess, no
HTTP hop). Like slurmrestd it moves no files: a pyslurm connection names its file channel.

PyPI's pyslurm 25.11 refuses to build unless the installed Slurm is exactly 25.11 ("Slurm version
mismatch"); the local factory runs 22.05, so this channel is written against pyslurm 25.11's
documented API and its test skips here, saying why. The module imports without pyslurm; the
channel fails with a clear message when it is chosen on a machine without it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, ClassVar

from operators.slurm.model import JobAccounting, JobStatus, SlurmError, gpu_hours
from operators.slurm.script import BatchJob
from operators.slurm.transport import ControlChannel, default_since


def load_pyslurm() -> Any:
    try:
        import pyslurm
    except ImportError as error:
        raise SlurmError("the 'pyslurm' transport needs pyslurm built against this site's libslurm "
                         f"(pip install pyslurm==<your Slurm version>): {error}") from None
    return pyslurm


def _value(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


class PyslurmControl(ControlChannel):
    kind: ClassVar[str] = "pyslurm"

    def __init__(self, user: str | None = None, **_: object) -> None:
        self.user = user
        self.pyslurm = load_pyslurm()

    def submit(self, job: BatchJob, script: str) -> int:
        description = self.pyslurm.JobSubmitDescription(
            name=job.name, script=script, working_directory=job.workdir, standard_output=job.output,
            cpus_per_task=job.cpus, memory_per_node=f"{job.memory_mb}M", time_limit=job.time_minutes,
            account=job.account, partition=job.partition, comment=job.comment, requeue=job.requeue,
            signal=job.signal or None, gres_per_node=f"gpu:{job.gpus}" if job.gpus else None)
        return int(description.submit())

    def jobs(self) -> dict[int, JobStatus]:
        statuses = {}
        for job in self.pyslurm.Jobs.load().values():
            if self.user and _value(job, "user_name") not in (None, self.user):
                continue
            start = _value(job, "start_time")
            statuses[int(job.id)] = JobStatus(
                int(job.id), str(job.state), _value(job, "exit_code"), _value(job, "state_reason", default=""),
                datetime.fromtimestamp(start).isoformat(timespec="seconds") if isinstance(start, int) else start,
                int(_value(job, "requeue_count", "restart_count", default=0)), _value(job, "comment", default=""),
                _value(job, "working_directory", default=""))
        return statuses

    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        if not job_ids:
            return {}
        job_filter = self.pyslurm.db.JobFilter(ids=list(job_ids), start_time=since or default_since())
        records = {}
        for job in self.pyslurm.db.Jobs.load(job_filter).values():
            elapsed = _value(job, "elapsed_time")
            stats = _value(job, "stats")
            gres = str(_value(job, "allocated_gres", default="") or "")  # gpu:2 or gpu:a100:2
            count = gres.rsplit(":", 1)[-1]
            gpus = int(count) if gres.startswith("gpu") and count.isdigit() else 0
            records[int(job.id)] = JobAccounting(
                int(job.id), str(job.state), _value(job, "exit_code"), _value(job, "state_reason", default=""),
                elapsed, _value(stats, "total_cpu_time"), _value(stats, "max_resident_memory"), gpus,
                gpu_hours(gpus, elapsed), _value(stats, "consumed_energy"))
        return records

    def cancel(self, job_id: int) -> None:
        self.pyslurm.Job(job_id).cancel()

    def describe(self) -> str:
        return f"Slurm {self.pyslurm.version()} via pyslurm"
