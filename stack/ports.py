"""Who listens on a TCP port of this network namespace: the supervisor's proof that the process it
started is the one answering, not an orphan of an earlier run that still holds the port.

The kernel's tables are read directly (``/proc/net/tcp{,6}`` for listening sockets and their
inodes, ``/proc/<pid>/fd`` for the processes holding them): no ``ss`` or ``lsof`` to install.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"


@dataclass(frozen=True)
class Holder:
    """A process with a listening socket on a port."""

    pid: int
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command or '?'})"


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return ""


def _sockets_of(pids, wanted: set[str]) -> dict[str, list[int]]:
    """Which of ``pids`` hold which of the ``wanted`` sockets (``socket:[inode]`` links)."""
    held: dict[str, list[int]] = {}
    for pid in pids:
        try:
            descriptors = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with descriptors:
            for descriptor in descriptors:
                try:
                    link = os.readlink(descriptor.path)
                except OSError:
                    continue
                if link in wanted:
                    held.setdefault(link, []).append(int(pid))
    return held


def all_pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def holders(port: int) -> list[Holder]:
    """The processes holding a listening socket on ``port``, lowest pid first; [] when the port is free."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    if not wanted:
        return []
    pids = sorted({pid for found in _sockets_of(all_pids(), wanted).values() for pid in found})
    return [Holder(pid, command_line(pid)) for pid in pids]


def foreign_holders(ports: tuple[int, ...], ours: set[int]) -> dict[int, list[Holder]]:
    """For each port, the processes outside ``ours`` that listen on it (only ports with such holders).

    Our own processes are searched first: a socket they hold is theirs (a process sharing it inherited
    it from them), so the whole of ``/proc`` is read only for sockets none of ours holds.
    """
    foreign = {}
    for port in ports:
        wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
        unexplained = wanted - set(_sockets_of(ours, wanted))
        if unexplained:
            pids = sorted({pid for found in _sockets_of(all_pids(), unexplained).values() for pid in found} - ours)
            foreign[port] = [Holder(pid, command_line(pid)) for pid in pids] or [Holder(0, "unknown process")]
    return foreign


def describe_foreign(name: str, foreign: dict[int, list[Holder]]) -> str:
    return "; ".join(
        f"{name}: port {port} is held by {', '.join(holder.describe() for holder in found)}, a process the stack "
        "did not start (or no longer tracks): stop it, then run `./factory stack up` again"
        for port, found in sorted(foreign.items()))
