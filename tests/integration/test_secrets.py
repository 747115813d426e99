"""Per-stack secrets stay private: 0600 files, never in logs, never on a command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def secret_values(stack_info) -> set[str]:
    secrets_dir = Path(stack_info["state"]) / "secrets"
    values = set(json.loads((secrets_dir / "secrets.json").read_text()).values())
    values |= set(json.loads((secrets_dir / "slurm-tokens.json").read_text()).values())
    return {value for value in values if len(value) >= 16}


def test_secret_files_are_owner_only(stack_info):
    secrets_dir = Path(stack_info["state"]) / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    files = [path for path in secrets_dir.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_secrets_are_outside_the_repository(stack_info):
    repo = Path(__file__).resolve().parents[2]
    assert not Path(stack_info["state"]).resolve().is_relative_to(repo)


def test_job_credentials_do_not_outlive_their_jobs(stack_info):
    """Jobs get credentials in a 0600 job.env that the operator deletes once the job has ended."""
    running = subprocess.run(["squeue", "-h", "-o", "%Z"], capture_output=True, text=True).stdout.split()
    left = [path for path in Path(stack_info["jobs_dir"]).rglob("job.env")
            if not any(str(path.parent) == folder for folder in running)]
    assert not left


def test_no_secret_in_any_log(stack_info, secret_values):
    state = Path(stack_info["state"])
    log_files = [p for folder in (state / "logs", state / "airflow" / "logs", Path(stack_info["jobs_dir"]))
                 if folder.exists() for p in folder.rglob("*") if p.is_file()]
    assert len(log_files) > 10, "expected the logs of every service and of task runs"
    leaks = [(str(path), value[:4] + "...") for path in log_files
             for value in secret_values if value in path.read_text(errors="replace")]
    assert not leaks


def test_no_secret_on_a_command_line(secret_values):
    leaks = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        leaks += [(entry.name, value[:4] + "...") for value in secret_values if value in cmdline]
    assert not leaks
