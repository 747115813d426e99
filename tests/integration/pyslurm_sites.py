"""Where the pyslurm transport's tests find pyslurm, and what they say when it is not there.

The stack builds pyslurm from the vendored tagged sources (``stack/pyslurm.py``): 22.5.3 into the
orchestrator venv for the host's Slurm 22.05, 24.11.0 into ``/opt/pyslurm-venv`` of the Slurm 24.11
chroot. Without it the tests skip and say how to build pyslurm against a site's libslurm;
``FACTORY_REQUIRE_PYSLURM=1`` (CI) turns that into a failure.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import pytest

from operators.slurm.pyslurm_call import PyslurmCommand
from operators.slurm.pyslurm_control import BUILD_HINT
from stack.process import StackError
from stack.pyslurm import ChrootPyslurm, sources
from stack.settings import StackPaths


def how_to_get_pyslurm(site: str) -> str:
    if not sources().is_dir():
        return f"the vendored pyslurm sources are not here ({sources()}). {BUILD_HINT}"
    command = "./factory slurm24 up" if site == "slurm24" else "./factory setup"
    return f"{command} builds it from {sources()} (stack/pyslurm.py)"


def missing(problem: str) -> NoReturn:
    if os.environ.get("FACTORY_REQUIRE_PYSLURM") == "1":
        pytest.fail(f"FACTORY_REQUIRE_PYSLURM=1 but {problem}")
    pytest.skip(problem)


def require_host_pyslurm() -> None:
    """pyslurm 22.5.x in this Python, for the host's Slurm 22.05."""
    try:
        import pyslurm
    except ImportError as error:
        missing(f"pyslurm does not import in {sys.executable} ({error}): {how_to_get_pyslurm('host')}")
    if not str(pyslurm.__version__).startswith("22.5."):
        missing(f"pyslurm {pyslurm.__version__} in {sys.executable} does not match the host's Slurm 22.05")


def chroot_pyslurm(user: str) -> PyslurmCommand:
    """pyslurm 24.11.0 in the Slurm 24.11 chroot, one call per process there."""
    try:
        command = ChrootPyslurm(StackPaths.from_env()).call_command(user)
    except StackError as error:
        missing(f"{error}: {how_to_get_pyslurm('slurm24')}")
    return PyslurmCommand(command, user=user, env={"PATH": "/usr/bin:/bin"})
