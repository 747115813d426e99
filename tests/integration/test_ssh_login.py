"""The login node: key-only SSH as the job user, host key checked, Slurm usable, multiplexing works.

This is what the Slurm SSH transport logs in to; every client here insists on the stack's
known_hosts (StrictHostKeyChecking=yes) and ignores the user's and the system's ssh_config.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest


def ssh_command(ssh: dict, *options: str, known_hosts: str | None = None, key: bool = True) -> list[str]:
    command = ["ssh", "-F", "/dev/null", "-p", str(ssh["port"]), "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts or ssh['known_hosts']}",
               "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"]
    if key:
        command += ["-i", ssh["key_file"], "-o", "IdentitiesOnly=yes"]
    return [*command, *options, f"{ssh['user']}@{ssh['host']}"]


def ssh_run(command: list[str], remote: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, remote] if remote else command, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def ssh(stack_info) -> dict:
    return stack_info["ssh"]


def test_key_login_runs_commands_as_the_job_user(ssh, stack_info):
    result = ssh_run(ssh_command(ssh), "id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == stack_info["job_user"]


def test_a_wrong_host_key_is_refused(ssh, tmp_path):
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    key_type, key_text = (tmp_path / "impostor.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{ssh['host']}]:{ssh['port']} {key_type} {key_text}\n")
    result = ssh_run(ssh_command(ssh, known_hosts=str(known_hosts)), "true")
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_password_login_is_refused_and_only_keys_are_offered(ssh):
    command = ssh_command(ssh, "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
                          key=False)
    result = ssh_run(command, "true")
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_slurm_commands_work_on_the_login_node(ssh):
    result = ssh_run(ssh_command(ssh), "sinfo -h -o %P")
    assert result.returncode == 0, result.stderr
    partitions = {name.rstrip("*") for name in result.stdout.split()}
    assert "cpu" in partitions, result.stdout


def test_commands_share_one_controlmaster_connection(ssh):
    # a short folder: a unix socket path may not exceed 107 bytes
    with tempfile.TemporaryDirectory(prefix="ssh-mux-", dir="/tmp") as folder:
        control = ["-o", f"ControlPath={Path(folder) / 'master'}"]
        try:
            first = ssh_run(ssh_command(ssh, *control, "-o", "ControlMaster=auto", "-o", "ControlPersist=60"),
                            "id -un")
            assert first.returncode == 0, first.stderr
            check = ssh_run(ssh_command(ssh, *control, "-O", "check"))
            assert check.returncode == 0 and "Master running" in check.stderr, check.stderr
            # no key and no new master: this can only succeed through the running master
            second = ssh_run(ssh_command(ssh, *control, "-o", "ControlMaster=no", "-o", "PubkeyAuthentication=no",
                                         key=False), "echo second")
            assert second.returncode == 0, second.stderr
            assert second.stdout.strip() == "second"
        finally:
            ssh_run(ssh_command(ssh, *control, "-O", "exit"))
        assert ssh_run(ssh_command(ssh, *control, "-O", "check")).returncode != 0, "the master has stopped"
