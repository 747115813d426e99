"""git, as the dataset registry's client: refs and commits only, with values that cannot become options.

Only the transports a registry needs are allowed (``GIT_ALLOW_PROTOCOL``): ``ext::`` and ``fd::`` run
commands; a repository or revision starting with ``-`` is refused (``operand``) and comes after ``--``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from operators.arguments import operand

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh"}


def git(args: Sequence[str], where: str, error: type[Exception], timeout_s: float = 60,
        git_dir: str | None = None) -> str:
    """``git [--git-dir=D] ARGS``; its output, or ``error`` naming ``where`` and git's own message."""
    command = ["git", *([f"--git-dir={git_dir}"] if git_dir else []), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **GIT_ENV}, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise error(f"{where}: git {args[0]} did not answer in {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise error(f"{where}: git {args[0]} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def repository_operand(location: str) -> str:
    return operand(location, "dataset repository")


def revision_operand(revision: str) -> str:
    return operand(revision, "dataset revision")
