"""Slurm's own commands (``sbatch``/``squeue``/``sacct``/``scancel``) as a control channel, run locally or over SSH.

``LocalCommands`` runs them on this machine (a worker on a login node). ``SshCommands`` runs the same
commands on a login node through one multiplexed OpenSSH connection per cluster: every task and the
triggerer on this host share its control socket, so the site sees one login, not one per task
(JSC firewalls hosts that connect too often). Host keys are always checked. ``SshRunner`` also carries
``operators.slurm.files.SshFiles``, so files and commands share that one login.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import math
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

from operators.slurm.budget import SSHARE_COMMAND, Allocation, parse_sshare
from operators.slurm.model import (
    JobAccounting,
    JobStatus,
    SlurmError,
    SlurmUnavailable,
    gpu_hours,
    is_transient,
    parse_tres,
    tres_gpus,
)
from operators.slurm.script import BatchJob
from operators.slurm.transport import ControlChannel, default_since
from operators.units import elapsed_seconds, size_bytes_or_none

SQUEUE_FIELDS = ("JobID", "State", "Reason", "StartTime", "RestartCnt", "WorkDir", "Comment")  # Comment last
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason", "ElapsedRaw", "TotalCPU", "MaxRSS", "AllocTRES",
                "ConsumedEnergyRaw", "User")


class LocalRunner:
    """Runs commands here, as the connection's user (``runuser`` when the worker runs as root)."""

    def __init__(self, user: str | None = None, timeout_s: float = 60.0) -> None:
        self.user = _account_name(user, "Slurm user (the connection's login)") if user else None
        self.timeout_s = timeout_s

    def argv(self, command: list[str]) -> list[str]:
        if self.user and os.geteuid() == 0 and self.user != "root":
            return ["runuser", "-u", self.user, "--", *command]
        return command

    def run(self, command: list[str], stdin: bytes | BinaryIO | None = None) -> str:
        """``stdin``: bytes, or an open file the command reads by itself (large input never passes through
        this process)."""
        argv = self.argv(command)
        piped = isinstance(stdin, bytes)
        source = subprocess.PIPE if piped else subprocess.DEVNULL if stdin is None else stdin
        # its own session: on a timeout the whole group goes (runuser's child too), not just the leader
        with subprocess.Popen(argv, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True) as process:
            try:
                stdout, stderr = process.communicate(stdin if piped else None, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                self._kill_group(process.pid)
                raise self._timed_out(command) from None
        return self._checked(command, subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))

    async def arun(self, command: list[str], stdin: bytes | None = None) -> str:
        """``run`` as a native asyncio subprocess: the triggerer's loop never waits on a command."""
        argv = self.argv(command)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError) as stopped:
            self._kill_group(process.pid)
            if isinstance(stopped, asyncio.CancelledError):
                raise
            with contextlib.suppress(TimeoutError):  # a moment to reap it; an SSH master may keep the pipes
                await asyncio.wait_for(process.wait(), 2)
            raise self._timed_out(command) from None
        return self._checked(command, subprocess.CompletedProcess(argv, process.returncode or 0, stdout, stderr))

    def _timed_out(self, command: list[str]) -> SlurmUnavailable:
        return SlurmUnavailable(f"{command[0]}: no answer in {self.timeout_s:.0f} s (timed out)")

    @staticmethod
    def _kill_group(pid: int) -> None:
        """Nobody waits for the pipes afterwards: an SSH master may hold them until the remote end exits."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    @staticmethod
    def _checked(command: list[str], done: subprocess.CompletedProcess) -> str:
        if done.returncode != 0:
            message = (done.stderr or done.stdout).decode(errors="replace").strip()[-1000:]
            error = SlurmUnavailable if is_transient(message) or done.returncode == 255 else SlurmError
            raise error(f"{command[0]} failed (exit {done.returncode}): {message}")
        return done.stdout.decode(errors="replace")


def _account_name(name: str, what: str) -> str:
    """A Unix account name as ``runuser -u`` and ``ssh user@host`` take it: never an option, never two words."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name or "", re.ASCII):
        raise SlurmError(f"{what}: {name!r} is not an account name (letters, digits and _.-, not starting with - "
                         "or .)")
    return name


def _host_name(host: str) -> str:
    """A host name or address for ssh: ``-oProxyCommand=...`` or ``a b`` would be read as options or words."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Fa-f:.]{2,45}", host or "",
                        re.ASCII):
        raise SlurmError(f"SSH host (the connection's host): {host!r} is not a host name or address")
    return host


class SshRunner(LocalRunner):
    """Runs commands on a login node through one shared, persistent OpenSSH master connection."""

    def __init__(self, host: str, user: str, port: int = 22, key_file: str | None = None,
                 known_hosts: str | None = None, control_dir: str | None = None, persist_s: int = 600,
                 timeout_s: float = 60.0) -> None:
        super().__init__(None, timeout_s)
        self.host = _host_name(host)
        self.user = _account_name(user, "SSH user (the connection's login)")
        self.port = int(port)
        self.key_file, self.known_hosts = key_file, known_hosts
        self.persist_s = persist_s
        directory = Path(control_dir or f"/tmp/aifactory-ssh-{os.geteuid()}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = hashlib.sha1(f"{user}@{host}:{port}".encode()).hexdigest()[:16]  # socket paths must stay short
        self.control_path = directory / name

    def __repr__(self) -> str:
        return f"SshRunner({self.user}@{self.host}:{self.port})"

    def _options(self) -> list[str]:
        options = ["-p", str(self.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                   "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
                   "-o", f"ControlPath={self.control_path}"]
        if self.key_file:
            options += ["-i", self.key_file, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return options

    def _master_listening(self) -> bool:
        """A socket file alone proves nothing: a master that died leaves it behind, and ssh would then
        quietly open one connection per command."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.control_path))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def ensure_master(self) -> None:
        """Start the shared master once; a lock keeps concurrent tasks from starting several."""
        if self._master_listening():
            return
        with open(f"{self.control_path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._master_listening():
                return
            self.control_path.unlink(missing_ok=True)  # a dead master's socket
            # -f -N: authenticate, then background; stdio to /dev/null so no caller waits on its pipes
            started = subprocess.run(
                ["ssh", *self._options(), "-o", "ControlMaster=yes", "-o", f"ControlPersist={self.persist_s}",
                 "-f", "-N", f"{self.user}@{self.host}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
            if started.returncode != 0:
                message = started.stderr.decode(errors="replace").strip()
                error = SlurmError if "host key verification failed" in message.lower() else SlurmUnavailable
                raise error(f"ssh {self.user}@{self.host}:{self.port}: {message}")

    def argv(self, command: list[str]) -> list[str]:
        """The remote end stops itself at our timeout: no hung command piles up on the login node, and
        the master (which holds our pipes) lets go of them."""
        limited = ["timeout", "-k", "2", str(math.ceil(self.timeout_s)), *command]
        return ["ssh", *self._options(), "-o", "ControlMaster=no", f"{self.user}@{self.host}", "--",
                shlex.join(limited)]

    def run(self, command: list[str], stdin: bytes | BinaryIO | None = None) -> str:
        self.ensure_master()
        return super().run(command, stdin)

    async def arun(self, command: list[str], stdin: bytes | None = None) -> str:
        if not self._master_listening():  # rare: only the first call, or after the master died
            await asyncio.to_thread(self.ensure_master)
        return await super().arun(command, stdin)


class LocalCommands(ControlChannel):
    """``sbatch``/``squeue``/``sacct``/``scancel`` on this machine."""

    kind: ClassVar[str] = "local"

    def __init__(self, user: str | None = None, cluster: str | None = None, timeout_s: float = 60.0,
                 runner: LocalRunner | None = None, **_: object) -> None:
        self.user = user
        self.cluster = cluster
        self.runner = runner or LocalRunner(user, timeout_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(user={self.user!r})"

    def submit(self, job: BatchJob, script: str) -> int:
        answer = self.runner.run(["sbatch", "--parsable"], stdin=script.encode())
        return int(answer.strip().split(";")[0])

    def _jobs_command(self) -> list[str]:
        fields = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
        command = ["squeue", "--noheader", "--states=all", f"--Format={fields}"]
        return [*command, f"--user={self.user}"] if self.user else command

    def jobs(self) -> dict[int, JobStatus]:
        return parse_squeue(self.runner.run(self._jobs_command()))

    async def async_jobs(self) -> dict[int, JobStatus]:
        return parse_squeue(await self.runner.arun(self._jobs_command()))

    def _accounting_command(self, job_ids: Collection[int], since: datetime | None) -> list[str]:
        start = (since or default_since()).strftime("%Y-%m-%dT%H:%M:%S")
        return ["sacct", "--noheader", "--parsable2", f"--starttime={start}",
                f"--jobs={','.join(str(job_id) for job_id in job_ids)}", f"--format={','.join(SACCT_FIELDS)}"]

    def accounting(self, job_ids: Collection[int], since: datetime | None = None) -> dict[int, JobAccounting]:
        return parse_sacct(self.runner.run(self._accounting_command(job_ids, since))) if job_ids else {}

    async def async_accounting(self, job_ids: Collection[int],
                               since: datetime | None = None) -> dict[int, JobAccounting]:
        return parse_sacct(await self.runner.arun(self._accounting_command(job_ids, since))) if job_ids else {}

    def cancel(self, job_id: int) -> None:
        self.runner.run(["scancel", str(job_id)])

    async def async_cancel(self, job_id: int) -> None:
        await self.runner.arun(["scancel", str(job_id)])

    def allocation(self, account: str) -> list[Allocation]:
        return parse_sshare(self.runner.run([*SSHARE_COMMAND, f"--accounts={account}"]), account)

    def describe(self) -> str:
        version = self.runner.run(["sinfo", "--version"]).strip()
        partitions = self.runner.run(["sinfo", "--noheader", "--format=%R"]).split()
        return f"{version} via {self.kind} commands; partitions: {', '.join(partitions)}"


def parse_squeue(output: str) -> dict[int, JobStatus]:
    """``squeue --Format`` rows, ``|``-separated with the free-text Comment last."""
    statuses = {}
    for line in output.splitlines():
        parts = line.removesuffix("|").split("|", len(SQUEUE_FIELDS) - 1)
        if len(parts) < len(SQUEUE_FIELDS) or not parts[0].strip().isdigit():
            continue  # array and heterogeneous job rows (12_3, 12+1) are not ours
        job_id, state, reason, start, restarts, workdir, comment = (part.strip() for part in parts)
        statuses[int(job_id)] = JobStatus(
            int(job_id), state.split()[0], None, "" if reason == "None" else reason,
            None if start in ("N/A", "Unknown", "") else start, int(restarts or 0),
            "" if comment == "(null)" else comment, workdir)
    return statuses


def _exit_code(text: str) -> int | None:
    """Text sacct's ``code:signal`` is right on 22.05 (its JSON is not). A signal reads as 128 + n."""
    code, _, signal = text.partition(":")
    if not code.isdigit():
        return None
    return int(code) or (128 + int(signal) if signal.isdigit() and int(signal) else 0)


def parse_sacct(output: str) -> dict[int, JobAccounting]:
    """Job rows give state and exit code; step rows give MaxRSS and energy, and the batch step the script's
    own exit code, which stands in when the job row says FAILED with 0 (accounting written in two steps)."""
    rows: dict[int, dict[str, str]] = {}
    peaks: dict[int, int] = {}
    energy: dict[int, int] = {}
    batch_exit: dict[int, int | None] = {}
    for line in output.splitlines():
        values = dict(zip(SACCT_FIELDS, line.split("|"), strict=False))
        head, _, step = values.get("JobID", "").partition(".")
        if not head.isdigit():
            continue
        job_id = int(head)
        if not step:
            rows[job_id] = values
        elif step == "batch":
            batch_exit[job_id] = _exit_code(values.get("ExitCode", ""))
        if (rss := size_bytes_or_none(values.get("MaxRSS", ""))) is not None:
            peaks[job_id] = max(peaks.get(job_id, 0), rss)
        if (joules := values.get("ConsumedEnergyRaw", "")).isdigit():
            energy[job_id] = max(energy.get(job_id, 0), int(joules))
    records = {}
    for job_id, values in rows.items():
        elapsed = int(values["ElapsedRaw"]) if values.get("ElapsedRaw", "").isdigit() else None
        gpus = tres_gpus(parse_tres(values.get("AllocTRES", "")))
        reason = values.get("Reason", "")
        state, exit_code = values.get("State", "UNKNOWN").split()[0], _exit_code(values.get("ExitCode", ""))
        if state == "FAILED" and not exit_code and batch_exit.get(job_id):
            exit_code = batch_exit[job_id]
        records[job_id] = JobAccounting(
            job_id, state, exit_code,
            "" if reason == "None" else reason, elapsed, elapsed_seconds(values.get("TotalCPU", "")),
            peaks.get(job_id), gpus, gpu_hours(gpus, elapsed), energy.get(job_id) or None, user=values.get("User", ""))
    return records


class SshCommands(LocalCommands):
    """The same commands on a login node, through one shared OpenSSH master connection."""

    kind: ClassVar[str] = "ssh"
    runner: SshRunner

    def __init__(self, host: str, user: str, port: int = 22, key_file: str | None = None,
                 known_hosts: str | None = None, control_dir: str | None = None, cluster: str | None = None,
                 timeout_s: float = 60.0, **_: object) -> None:
        runner = SshRunner(host, user, port, key_file, known_hosts, control_dir, timeout_s=timeout_s)
        super().__init__(user, cluster, runner=runner)

    def __repr__(self) -> str:
        return f"SshCommands({self.runner!r})"

    def describe(self) -> str:
        return f"{super().describe()} on {self.runner.user}@{self.runner.host}:{self.runner.port}"
