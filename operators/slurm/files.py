"""File channels: how a job's folder, log and results travel between the Airflow worker and the cluster.

``SharedFiles`` for a worker that sees the cluster's file system at the same paths (a login node, the
local factory); ``SshFiles`` for one that does not, through an SSH login node (the same multiplexed
connection as the ``ssh`` control channel when both go to one host). A cluster sharing nothing but an
object store would add an S3 channel here (stage by upload, logs by ranged reads) and name it in
``operators.slurm.transports.FILE_CHANNELS``; nothing else changes.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import pwd
import shutil
import tarfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from operators.slurm.transport import LOG_READ_LIMIT, FileChannel, LogRequests

log = logging.getLogger(__name__)


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"{name}: leaves the folder it was fetched into")
    return target


def extract_plain(tar: tarfile.TarFile, destination: Path) -> list[str]:
    """What a job left, written as plain files and folders only: links, devices and names leaving
    ``destination`` are skipped and returned (tarfile's ``data`` filter arrived in Python 3.11.4;
    bookworm has 3.11.2). Modes keep the owner's bits and never setuid/setgid."""
    root, skipped = destination.resolve(), []
    for member in tar:
        try:
            target = _inside(root, member.name)
        except ValueError:
            skipped.append(member.name)
            continue
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile() and (source := tar.extractfile(member)) is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            target.chmod(member.mode & 0o755 | 0o600)
        else:
            skipped.append(member.name)
    return skipped


def copy_plain_tree(source: Path, destination: Path) -> list[str]:
    """``extract_plain`` for a folder on a shared file system: links are never followed nor copied."""
    skipped = []
    for folder, subfolders, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        (destination / relative).mkdir(parents=True, exist_ok=True)
        for name in (*subfolders, *files):
            path = Path(folder) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                skipped.append(str(relative / name))
            elif path.is_file():
                shutil.copyfile(path, destination / relative / name, follow_symlinks=False)
    return skipped


def _report_skipped(path: str, skipped: list[str]) -> None:
    if skipped:
        log.warning("%s: not fetched (links, devices or names outside the folder): %s", path,
                    ", ".join(sorted(skipped)[:20]))


class CommandRunner(Protocol):
    """What ``SshFiles`` runs its commands through (``operators.slurm.cli.SshRunner``)."""

    def run(self, command: list[str], stdin: bytes | BinaryIO | None = None) -> str: ...

    async def arun(self, command: list[str], stdin: bytes | None = None) -> str: ...


class SharedFiles(FileChannel):
    """Files written and read directly: the worker and the cluster share one file system."""

    def __repr__(self) -> str:
        return "SharedFiles()"

    def stage(self, workdir: str, files: Mapping[str, bytes], owner: str | None) -> None:
        target = Path(workdir)
        created = self._fresh_folder(target)
        for name, content in files.items():
            self._write_private(target / name, content)
        if owner and os.geteuid() == 0:
            self._hand_over([*created, *target.iterdir()], owner)

    @staticmethod
    def _fresh_folder(target: Path) -> list[Path]:
        """An empty ``target`` (0700); the folders this call made, ``target`` first."""
        if target.exists():
            shutil.rmtree(target)
        created = [target, *(parent for parent in target.parents if not parent.exists())]
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        return created

    @staticmethod
    def _write_private(path: Path, content: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)

    @staticmethod
    def _hand_over(paths: list[Path], owner: str) -> None:
        """Only what the staging made changes owner: never a folder above it."""
        account = pwd.getpwnam(owner)
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def fetch_folder(self, path: str, destination: Path) -> None:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: no such folder on the cluster")
        _report_skipped(path, copy_plain_tree(Path(path), destination))

    def tail(self, path: str, nbytes: int) -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - nbytes))
                return handle.read(nbytes)
        except FileNotFoundError:
            return b""

    def read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        return {job_id: self._read_from(path, offset) for job_id, (path, offset) in requests.items()}

    @staticmethod
    def _read_from(path: str, offset: int) -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(LOG_READ_LIMIT)
        except FileNotFoundError:
            return b""


class SshFiles(FileChannel):
    """Files through an SSH login node: tar streams and shell commands over one multiplexed connection."""

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    def __repr__(self) -> str:
        return f"SshFiles({self.runner!r})"

    def stage(self, workdir: str, files: Mapping[str, bytes], owner: str | None) -> None:
        """One tar stream through the connection; umask 077 keeps every file private. The tar is written into
        a pipe that ssh reads as it sends: no copy of the files on disk or in memory, and the two overlap."""
        read_end, write_end = os.pipe()  # neither end is inherited by ssh but as its stdin
        failures: list[BaseException] = []
        with open(read_end, "rb") as source:
            writer = threading.Thread(target=self._tar_into_pipe, args=(files, write_end, failures),
                                      name="stage-tar", daemon=True)
            writer.start()
            try:
                self.runner.run(["sh", "-c", 'umask 077 && rm -rf -- "$1" && mkdir -p -- "$1" && tar -xf - -C "$1"',
                                 "stage", workdir], stdin=source)
            finally:
                source.close()  # ssh is gone: a writer still blocked on the pipe gets EPIPE and ends
                writer.join()
        if failures:
            raise failures[0]

    @staticmethod
    def _tar_into_pipe(files: Mapping[str, bytes], write_end: int, failures: list[BaseException]) -> None:
        try:
            with open(write_end, "wb") as sink, tarfile.open(fileobj=sink, mode="w|") as tar:
                for name, content in files.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(content), 0o600, int(time.time())
                    tar.addfile(info, io.BytesIO(content))
        except BrokenPipeError:
            pass  # the remote side ended first: its exit status says why
        except BaseException as error:  # re-raised in the caller's thread
            failures.append(error)

    def remove(self, path: str) -> None:
        self.runner.run(["rm", "-f", "--", path])

    async def async_remove(self, path: str) -> None:
        await self.runner.arun(["rm", "-f", "--", path])

    def fetch_folder(self, path: str, destination: Path) -> None:
        """One tar stream back through the connection; only its files and folders are extracted, and only
        inside ``destination`` (``extract_plain``)."""
        encoded = self.runner.run(["sh", "-c", 'test -d "$1" || { echo "$1: no such folder" >&2; exit 1; }; '
                                   'tar -cf - -C "$1" . | base64 -w0', "fetch", path])
        destination.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(encoded.strip())), mode="r") as tar:
            _report_skipped(path, extract_plain(tar, destination))

    def tail(self, path: str, nbytes: int) -> bytes:
        return base64.b64decode(self.runner.run(["sh", "-c", f'tail -c {int(nbytes)} -- "$1" 2>/dev/null | base64 -w0',
                                                 "tail", path]).strip() or b"")

    @staticmethod
    def _read_logs_command(requests: LogRequests) -> list[str]:
        """All logs in one remote command: ``tail -c +offset`` of each, base64 framed."""
        script = ('while [ $# -gt 0 ]; do printf "%s " "$1"; '
                  f'tail -c +"$(($3 + 1))" -- "$2" 2>/dev/null | head -c {LOG_READ_LIMIT} | base64 -w0; '
                  'echo; shift 3; done')
        arguments = [str(part) for job_id, (path, offset) in requests.items() for part in (job_id, path, offset)]
        return ["sh", "-c", script, "read-logs", *arguments]

    @staticmethod
    def _parse_log_chunks(output: str) -> dict[int, bytes]:
        chunks: dict[int, bytes] = {}
        for line in output.splitlines():
            job_id, _, encoded = line.partition(" ")
            if job_id.isdigit():
                chunks[int(job_id)] = base64.b64decode(encoded) if encoded else b""
        return chunks

    def read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        return self._parse_log_chunks(self.runner.run(self._read_logs_command(requests))) if requests else {}

    async def async_read_logs(self, requests: LogRequests) -> dict[int, bytes]:
        if not requests:
            return {}
        return self._parse_log_chunks(await self.runner.arun(self._read_logs_command(requests)))
