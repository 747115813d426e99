"""Render a batch script from a job description. No Airflow: also used by ``factory render``."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path


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
    # USR2 (NCCL takes USR1) to the batch shell 300 s before the time limit; the script passes it on
    signal: str | None = "B:USR2@300"
    requeue: bool = False
    extra_directives: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return f"{self.workdir}/slurm-%j.out"

    @property
    def memory_mb(self) -> int:
        """``--mem`` as megabytes, for APIs that take numbers (slurmrestd, pyslurm)."""
        units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
        number, unit = (self.memory[:-1], self.memory[-1]) if self.memory[-1] in units else (self.memory, "M")
        return max(1, int(float(number) * units[unit]))

    @property
    def time_minutes(self) -> int:
        """``--time`` as whole minutes (Slurm rounds seconds up)."""
        if self.time.isdigit():
            return int(self.time)
        days, _, clock = self.time.rpartition("-")
        hours, minutes, seconds = (int(part) for part in clock.split(":"))
        return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


class UnsafeScriptError(ValueError):
    """A value would change the script's meaning (a newline ends an ``#SBATCH`` comment line)."""


def env_file_text(env: dict[str, str]) -> str:
    """``KEY='value'`` lines that bash sources without expanding anything (written 0600)."""
    for key, value in env.items():
        if not key.isidentifier():
            raise UnsafeScriptError(f"environment variable name {key!r} is not a valid identifier")
        try:
            str(value).encode()
        except UnicodeEncodeError:  # the value may be a secret: name the variable only
            raise UnsafeScriptError(f"environment variable {key}: value is not valid Unicode text") from None
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in env.items())


def write_env_file(path: Path, env: dict[str, str]) -> None:
    text = env_file_text(env)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def signal_name(signal: str) -> str:
    """``B:USR2@300`` → ``USR2``; refuses anything but a plain signal name or number."""
    name = signal.split(":", 1)[-1].split("@", 1)[0].removeprefix("SIG")
    if not (name.isalnum() and name.isascii()):
        raise UnsafeScriptError(f"--signal={signal!r}: expected [B:]NAME[@SECONDS], e.g. B:USR2@300")
    return name


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
    if job.signal:
        directives.append(f"--signal={job.signal}")
    directives.append("--requeue" if job.requeue else "--no-requeue")
    directives += job.extra_directives
    for directive in directives:
        if any(character in directive for character in "\n\r\0"):
            raise UnsafeScriptError(f"#SBATCH {directive!r}: a line break or NUL would end the directive "
                                    "and run the rest as a command")
    for command in job.commands:
        for argument in command:
            if "\0" in argument:
                raise UnsafeScriptError(f"command {command[0]!r}: NUL bytes cannot be passed as arguments")
            try:
                argument.encode()
            except UnicodeEncodeError:
                raise UnsafeScriptError(f"command {command[0]!r}: an argument is not valid Unicode text") from None
    lines = ["#!/bin/bash"] + [f"#SBATCH {shlex.quote(d)}" for d in directives] + [
        "set -euo pipefail",
        'echo "job $SLURM_JOB_ID on $(hostname) as $(id -un), started $(date -Is)"',
    ]
    if job.env_file:
        # credentials live only until the job has read them; a requeueable job reads them again when it
        # restarts, so the operator removes them once the job has ended
        read = f"set -a; source {shlex.quote(job.env_file)}; set +a"
        lines += [read if job.requeue else f"{read}; rm -f {shlex.quote(job.env_file)}"]
    if job.signal:
        # bash runs traps only between commands: run each in the background and wait, so the signal
        # reaches the training process at once (it checkpoints; see README "Preemption and time limits")
        lines += [
            # only to a process that handles it: Python's default for USR2 is to die, which would turn
            # a warning into a failure for code that does not checkpoint
            'catches() { local mask; mask=$(awk \'/^SigCgt:/{print $2}\' "/proc/$1/status" 2>/dev/null) || return 1; '
            '[ -n "$mask" ] && [ $(( (0x$mask >> ($(kill -l "$2") - 1)) & 1 )) -eq 1 ]; }',
            'forward() { if [ -n "${child:-}" ] && catches "$child" "$1"; then kill -s "$1" "$child"; '
            'else echo "time-limit warning $1: the job does not handle it and runs on to its limit"; fi; }',
            f"trap 'forward {signal_name(job.signal)}' {signal_name(job.signal)}",
            'run() { "$@" & child=$!; while true; do wait "$child" && status=0 || status=$?; '
            'kill -0 "$child" 2>/dev/null || break; done; child=; return "$status"; }',
        ]
        lines += [f"run {shlex.join(command)}" for command in job.commands]
    else:
        lines += [shlex.join(command) for command in job.commands]
    lines.append('echo "job $SLURM_JOB_ID finished $(date -Is)"')
    return "\n".join(lines) + "\n"
