"""Files staged into a job folder: read from inside their own folder only, never through a link.

A pipeline folder is written by many hands; a ``train.py`` that is a link to ``/etc/shadow`` or to
``/proc/self/environ`` (the worker's secrets), or a script folder that is a link elsewhere, would ship that
file to the cluster. Every component below the folder is opened with ``O_NOFOLLOW`` relative to the one
above it, so neither a link nor a race that swaps a folder for a link can lead outside.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from operators.errors import RefusedInput

MAX_STAGED_BYTES = 64 << 20  # a script and its modules, a contract: never a dataset (those come from S3)


class StagingError(RefusedInput):
    """A file that cannot be staged: outside its folder, a link, not a regular file, or too large."""


def relative_parts(relative: str) -> tuple[str, ...]:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(part in ("..", ".", "") for part in parts):
        raise StagingError(f"{relative!r}: a staged file is named relative to its folder, without '..'")
    return parts


def read_inside(folder: Path, relative: str, content: bool = True) -> bytes:
    """The bytes of ``folder/relative``; ``StagingError`` if any part of it below ``folder`` is a link.
    ``content=False`` checks without reading (``factory lint`` and the DAG processor)."""
    parts = relative_parts(relative)
    where = folder / relative
    descriptors = []
    try:
        current = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        descriptors.append(current)
        for part in parts[:-1]:
            current = _open(part, current, os.O_DIRECTORY, where)
            descriptors.append(current)
        handle = _open(parts[-1], current, os.O_NONBLOCK, where)
        descriptors.append(handle)
        status = os.fstat(handle)
        if not stat.S_ISREG(status.st_mode):
            raise StagingError(f"{where}: not a regular file")
        if status.st_size > MAX_STAGED_BYTES:
            raise StagingError(f"{where}: {status.st_size} bytes, more than {MAX_STAGED_BYTES >> 20} MiB")
        if not content:
            return b""
        with os.fdopen(os.dup(handle), "rb") as reader:
            return reader.read(MAX_STAGED_BYTES + 1)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _open(name: str, directory: int, flags: int, where: Path) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | flags, dir_fd=directory)
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise StagingError(f"{where}: {name} is a symbolic link: staged files must live in the folder itself, "
                               "never behind a link") from None
        raise StagingError(f"{where}: {error.strerror}") from None


def staging_problem(folder: Path, relative: str) -> str | None:
    """Why ``folder/relative`` cannot be staged, in words; None when it can (checked at review time too)."""
    try:
        read_inside(folder, relative, content=False)
    except StagingError as error:
        return str(error)
    return None
