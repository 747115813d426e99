"""Render a batch script from a job description. No Airflow: also used by ``factory render``."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from operators.arguments import UnsafeArgument, operand
from operators.slurm.model import SlurmError
from operators.units import memory_mb, slurm_time_minutes

Launcher = Literal["plain", "srun", "torchrun"]
RUNTIMES = ("apptainer", "singularity", "pyxis-enroot", "cscs-container-engine")
# The job's credentials, 0600 in its folder; removed once the job has ended (never kept with the job's files).
JOB_ENV_FILE = "job.env"


class UnsafeScriptError(SlurmError, ValueError):
    """A value would change the script's meaning (a newline ends an ``#SBATCH`` comment line)."""


@dataclass(frozen=True)
class ContainerRun:
    """How a site runs a command in an image: a command prefix (Apptainer) or srun options (Pyxis, CSCS CE)."""

    runtime: str  # one of RUNTIMES
    image: str
    gpu_flag: str | None = None  # --nv (NVIDIA) or --rocm (AMD) for Apptainer/Singularity

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UnsafeScriptError(f"container runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        try:
            operand(self.image, "container image")
        except UnsafeArgument as error:
            raise UnsafeScriptError(str(error)) from None

    def prefix(self, workdir: str) -> list[str]:
        """``apptainer exec [--nv] --bind DIR -- IMAGE``: the image is never read as an option."""
        if self.runtime in ("apptainer", "singularity"):
            return [self.runtime, "exec", *([self.gpu_flag] if self.gpu_flag else []), "--bind", workdir, "--",
                    self.image]
        return []

    @property
    def needs_srun(self) -> bool:
        """Pyxis and the CSCS Container Engine start containers only as srun options."""
        return self.runtime in ("pyxis-enroot", "cscs-container-engine")

    def srun_options(self, workdir: str) -> list[str]:
        if self.runtime == "pyxis-enroot":
            return [f"--container-image={self.image}", f"--container-mounts={workdir}",
                    f"--container-workdir={workdir}"]
        if self.runtime == "cscs-container-engine":
            return [f"--environment={self.image}"]
        return []


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
    nodes: int = 1
    tasks_per_node: int = 1  # Slurm tasks; a torchrun launcher is one task per node with procs_per_node workers
    qos: str | None = None
    gpu_directives: tuple[str, ...] | None = None  # the site's way to ask for GPUs; default --gres=gpu:N
    launcher: Launcher = "plain"  # how the last command starts: in the batch shell, under srun, or torchrun
    procs_per_node: int = 1  # torchrun workers per node
    container: ContainerRun | None = None

    @property
    def output(self) -> str:
        return f"{self.workdir}/slurm-%j.out"

    @property
    def memory_mb(self) -> int:
        """``--mem`` as megabytes, for APIs that take numbers (slurmrestd, pyslurm)."""
        return memory_mb(self.memory)

    @property
    def time_minutes(self) -> int:
        """``--time`` as whole minutes (Slurm rounds seconds up)."""
        return slurm_time_minutes(self.time)


def with_runtime(commands: list[list[str]], python_env: str | None) -> list[list[str]]:
    """``python`` in a command becomes the job environment's interpreter (not in containers: theirs)."""
    if not python_env:
        return commands
    return [[f"{python_env}/bin/python", *command[1:]] if command[0] == "python" else command for command in commands]


def python_environment(environment: str | None, default_runtime: str | None) -> str | None:
    """A spec's ``environment``: an absolute path on the cluster, or a name beside the connection's runtime."""
    if environment and environment.startswith("/"):
        return environment
    if environment and default_runtime:
        return str(Path(default_runtime).parent / environment)
    return default_runtime


# SlurmJobOperator's arguments that shape the job; pipelines pass them, ``factory render`` uses them alike
JOB_OPTIONS = ("commands", "cpus", "memory", "time_limit", "partition", "gpus", "signal", "requeue", "nodes",
               "tasks_per_node", "procs_per_node", "qos", "account", "gpu_directives", "launcher", "container",
               "environment")


def batch_job(*, name: str, workdir: str, comment: str, settings: dict, commands: list[list[str]], cpus: int = 1,
              memory: str = "1G", time_limit: str = "00:30:00", partition: str | None = None, gpus: int = 0,
              signal: str | None = "B:USR2@300", requeue: bool = False, nodes: int = 1, tasks_per_node: int = 1,
              procs_per_node: int = 1, qos: str | None = None, account: str | None = None,
              gpu_directives: tuple[str, ...] | None = None, launcher: Launcher = "plain",
              container: ContainerRun | None = None, environment: str | None = None) -> BatchJob:
    """The batch job for a connection's ``settings`` (account, job runtime) and the job options."""
    python_env = None if container else python_environment(environment, settings.get("job_runtime"))
    return BatchJob(
        name=name, account=account or settings.get("account"), partition=partition, cpus=cpus, memory=memory,
        time=time_limit, gpus=gpus, workdir=workdir, commands=with_runtime(commands, python_env),
        env_file=f"{workdir}/{JOB_ENV_FILE}", comment=comment, signal=signal, requeue=requeue, nodes=nodes,
        tasks_per_node=tasks_per_node, procs_per_node=procs_per_node, qos=qos,
        gpu_directives=tuple(gpu_directives) if gpu_directives is not None else None, launcher=launcher,
        container=container)


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


def gpu_request(job: BatchJob) -> list[str]:
    if not job.gpus:
        return []
    return list(job.gpu_directives) if job.gpu_directives is not None else [f"--gres=gpu:{job.gpus}"]


def _task_directives(job: BatchJob) -> list[str]:
    if job.launcher == "plain" and job.nodes == 1 and job.tasks_per_node == 1:
        return ["--ntasks=1"]
    directives = [f"--nodes={job.nodes}"]
    if not any(directive.startswith("--ntasks-per-node=") for directive in gpu_request(job)):
        directives.append(f"--ntasks-per-node={job.tasks_per_node}")
    return directives


# torchrun's rendezvous: the first node of the allocation at the address Slurm itself reaches it by
# (NodeAddr: node names need not resolve), a port per job so jobs sharing a node never meet
RENDEZVOUS = ['head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              'head_addr=$(scontrol show node "$head_node" | sed -n \'s/.*NodeAddr=\\([^ ]*\\).*/\\1/p\')',
              "rdzv_port=$((29500 + SLURM_JOB_ID % 1000))"]


def launch_line(job: BatchJob, command: list[str], launched: bool) -> str:
    """One command as the script runs it: in a container if asked, the launched one under srun/torchrun."""
    container = job.container
    argv = [*(container.prefix(job.workdir) if container else []), *command]
    needs_srun = launched and (job.launcher != "plain" or (container is not None and container.needs_srun))
    if not needs_srun:
        return shlex.join(argv)
    srun = ["srun", "--kill-on-bad-exit=1", f"--nodes={job.nodes}", f"--ntasks-per-node={job.tasks_per_node}",
            f"--cpus-per-task={job.cpus}", *(container.srun_options(job.workdir) if container else [])]
    if job.launcher != "torchrun":
        return shlex.join([*srun, *argv])
    python_at = len(argv) - len(command)
    torchrun = [*argv[:python_at + 1], "-m", "torch.distributed.run", f"--nnodes={job.nodes}",
                f"--nproc-per-node={job.procs_per_node}", "--rdzv-backend=c10d"]
    rendezvous = '--rdzv-id="$SLURM_JOB_ID" --rdzv-endpoint="${head_addr:-$head_node}:$rdzv_port"'
    return f"{shlex.join([*srun, *torchrun])} {rendezvous} {shlex.join(command[1:])}"


def render(job: BatchJob) -> str:
    directives = [
        f"--job-name={job.name}",
        f"--chdir={job.workdir}",
        f"--output={job.output}",
        f"--cpus-per-task={job.cpus}",
        f"--mem={job.memory}",
        f"--time={job.time}",
        *_task_directives(job),
    ]
    if job.account:
        directives.append(f"--account={job.account}")
    if job.partition:
        directives.append(f"--partition={job.partition}")
    if job.qos:
        directives.append(f"--qos={job.qos}")
    directives += gpu_request(job)
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
        try:
            directive.encode()
        except UnicodeEncodeError:
            raise UnsafeScriptError(f"#SBATCH {directive!r}: not valid Unicode text") from None
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
    if job.launcher == "torchrun":
        lines += RENDEZVOUS
    last = len(job.commands) - 1
    lines += [f"{'run ' if job.signal else ''}{launch_line(job, command, index == last)}"
              for index, command in enumerate(job.commands)]
    lines.append('echo "job $SLURM_JOB_ID finished $(date -Is)"')
    return "\n".join(lines) + "\n"
