"""What a project has left of its allocation, and whether a job fits in it, before the job is submitted.

Factories grant compute in CPU-, GPU- or node-hours, enforced by Slurm as the account association's
``GrpTRESMins``. A job that asks for more than is left is not refused by ``sbatch``: it waits in the queue
forever (reason ``AssocGrpCPUMinutesLimit``). So the platform reads the allocation first (``sshare``:
the limit, the usage Slurm counts against it and what running jobs still hold) and refuses such a job with
both figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from operators.slurm.script import BatchJob
from operators.units import slurm_time_minutes

TRES_WORDS = {"cpu": "CPU-minutes", "gres/gpu": "GPU-minutes", "node": "node-minutes", "billing": "billing units"}
SSHARE_COMMAND = ["sshare", "--noheader", "--parsable2", "--format=Account,User,GrpTRESMins,GrpTRESRaw,TRESRunMins"]


@dataclass(frozen=True)
class Allocation:
    """One limited resource of an account, in TRES-minutes: the limit, what ended jobs used and what running
    jobs may still use (Slurm counts both against the limit)."""

    account: str
    tres: str
    limit_minutes: int
    used_minutes: int
    running_minutes: int = 0

    @property
    def remaining_minutes(self) -> int:
        return max(0, self.limit_minutes - self.used_minutes - self.running_minutes)

    def describe(self) -> str:
        words = TRES_WORDS.get(self.tres, f"{self.tres}-minutes")
        return f"{self.remaining_minutes} {words} left of {self.limit_minutes} (account {self.account})"


def _tres(text: str) -> dict[str, int]:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {name: int(value) for name, value in pairs if value.isdigit()}


def parse_sshare(output: str, account: str) -> list[Allocation]:
    """The account row (no user) of ``SSHARE_COMMAND``'s output: a limit for each TRES the account caps."""
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) >= 4 and fields[0].strip() == account and not fields[1].strip():
            limits, used = _tres(fields[2]), _tres(fields[3])
            running = _tres(fields[4]) if len(fields) > 4 else {}
            return [Allocation(account, tres, limit, used.get(tres, 0), running.get(tres, 0))
                    for tres, limit in sorted(limits.items())]
    return []


def request_minutes(job: BatchJob) -> dict[str, int]:
    """What the job can consume at most, in TRES-minutes: its time limit times what it holds."""
    minutes = slurm_time_minutes(job.time)
    cpus = job.nodes * job.tasks_per_node * job.cpus
    return {"cpu": cpus * minutes, "node": job.nodes * minutes, "gres/gpu": job.nodes * job.gpus * minutes,
            "billing": cpus * minutes}


def over_budget(job: BatchJob, allocations: list[Allocation]) -> str | None:
    """Why the job does not fit the allocation (both figures, and how the request is counted); None if it fits."""
    asked = request_minutes(job)
    for allocation in allocations:
        wanted = asked.get(allocation.tres)
        if wanted and wanted > allocation.remaining_minutes:
            words = TRES_WORDS.get(allocation.tres, f"{allocation.tres}-minutes")
            return (f"allocation {allocation.account}: {allocation.describe()}; the job asks for up to {wanted} "
                    f"{words} ({job.nodes} node(s), time limit {job.time}). Shorten the time limit, ask for less, or "
                    "ask the site for more allocation")
    return None
