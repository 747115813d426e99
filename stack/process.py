"""Start, watch and stop foreground daemons without systemd.

Each service runs in the foreground in its own session (so its process group is its own), with
stdout and stderr in ``<state>/logs/<name>.log``. Its pid file holds the pid and the kernel's start
time of that pid, so a recycled pid is never mistaken for the service. Stopping sends SIGTERM to
the service's process group, waits, then SIGKILLs that group only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class StackError(RuntimeError):
    """A service failed; the message names it and carries its log tail."""


def process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces; fields after the closing parenthesis are fixed
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has exited


def process_started_at(pid: int) -> float | None:
    """When the process started, in seconds since the epoch (its start in clock ticks after boot)."""
    ticks = process_start_time(pid)
    if ticks is None:
        return None
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + int(ticks) / os.sysconf("SC_CLK_TCK")


def processes_in_group(pgid: int) -> list[int]:
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and process_start_time(int(entry.name)):
                members.append(int(entry.name))  # zombies have exited: they do not count
        except (ProcessLookupError, PermissionError):
            continue
    return members


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def family(pid: int) -> set[int]:
    """The processes a service consists of: its process group and every descendant (some start their own session)."""
    members = set(processes_in_group(pid)) | {pid}
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (parent := parent_pid(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in members:
                members.add(child)
                stack.append(child)
    return members


def log_tail(log_file: Path, lines: int = 30) -> str:
    if not log_file.exists():
        return f"(no log at {log_file})"
    with log_file.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 16384))
        tail = handle.read().decode(errors="replace").splitlines()[-lines:]
    return "\n".join(tail)


class Supervised:
    """One long-running process of the stack, tracked by its pid file."""

    def __init__(self, name: str, run_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"

    def _record(self) -> list[str]:
        try:
            return self.pid_file.read_text().split()
        except FileNotFoundError:
            return []

    def pid(self) -> int | None:
        """The pid if the recorded process is still the one we started, else None."""
        record = self._record()
        if len(record) < 2 or not record[0].isdigit():
            return None
        pid = int(record[0])
        return pid if process_start_time(pid) == record[1] else None

    def fingerprint(self) -> str | None:
        """What the running process was started with (command, environment), as recorded at its start."""
        record = self._record()
        return record[2] if len(record) > 2 else None

    def start(self, command: list[str], env: dict[str, str], cwd: Path | None = None,
              user: str | None = None, fingerprint: str = "-") -> int:
        with self.log_file.open("ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True, user=user,
            )
        self.pid_file.write_text(f"{process.pid} {process_start_time(process.pid)} {fingerprint}\n")
        return process.pid

    def exited_early(self) -> bool:
        return self.pid_file.exists() and self.pid() is None

    def stop(self, grace_s: float = 10.0, first: int = signal.SIGTERM) -> bool:
        """Stop the process group (``first``, then SIGKILL after ``grace_s``); True when something had to be
        stopped."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        for sig, wait_s in ((first, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not processes_in_group(pid):
                    return True
                time.sleep(0.1)
        return True
