"""Render a batch script from a job description. No Airflow: also used by ``factory render``."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BatchJob:
    name: str
    account: str | None
    partition: str | None
    cpus: int
    memory: str
    time: str
    gpus: int
    workdir: str
    commands: list[list[str]]  # each command is an argv, quoted on rendering
    env_file: str | None = None
    comment: str = ""
    extra_directives: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return f"{self.workdir}/slurm-%j.out"


def render(job: BatchJob) -> str:
    directives = [
        f"--job-name={job.name}",
        f"--chdir={job.workdir}",
        f"--output={job.output}",
        f"--cpus-per-task={job.cpus}",
        f"--mem={job.memory}",
        f"--time={job.time}",
        "--ntasks=1",
    ]
    if job.account:
        directives.append(f"--account={job.account}")
    if job.partition:
        directives.append(f"--partition={job.partition}")
    if job.gpus:
        directives.append(f"--gres=gpu:{job.gpus}")
    if job.comment:
        directives.append(f"--comment={job.comment}")
    directives += job.extra_directives
    lines = ["#!/bin/bash"] + [f"#SBATCH {shlex.quote(d)}" for d in directives] + [
        "set -euo pipefail",
        'echo "job $SLURM_JOB_ID on $(hostname) as $(id -un), started $(date -Is)"',
    ]
    if job.env_file:
        # credentials live only until the job has read them
        lines += [f"set -a; source {shlex.quote(job.env_file)}; set +a; rm -f {shlex.quote(job.env_file)}"]
    lines += [shlex.join(command) for command in job.commands]
    lines.append('echo "job $SLURM_JOB_ID finished $(date -Is)"')
    return "\n".join(lines) + "\n"
