"""Slurm: the accounting daemon, the controller, one compute node and the REST API, all on this host."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path

from stack.services.common import Service, command_check, ensure_dir, http_check, port_check, run
from stack.settings import (
    CLUSTER,
    HOST,
    JOB_USER,
    NODE,
    PORTS,
    REPO,
    REST_USER,
    SLURM_ACCOUNT,
    SLURM_ETC,
    StackPaths,
    StackSecrets,
    write_private,
)

CONFIG_FILES = ("slurm.conf", "cgroup.conf", "gres.conf", "slurmdbd.conf")
REST_URL = f"http://{HOST}:{PORTS['slurmrestd']}"
NODE_HARDWARE_KEYS = {"CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"}


def slurm_node_health(run_command: Callable[..., subprocess.CompletedProcess], node: str) -> str | None:
    """None once the node takes jobs; a node left down or drained by an earlier run is resumed."""
    result = run_command(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], timeout_s=10)
    state = result.stdout.strip()
    if result.returncode != 0 or not state:
        return result.stderr.strip() or "node not reported yet"
    if state.startswith(("idle", "mixed", "allocated", "completing")):
        return None
    if state in ("down", "drained", "draining") or state.startswith("drain"):
        run_command(["scontrol", "update", f"nodename={node}", "state=resume"])
    return f"node {node} is {state}"


class Slurm:
    def __init__(self, paths: StackPaths, secrets: StackSecrets, hostname: str) -> None:
        self.paths = paths
        self.secrets = secrets
        self.hostname = hostname

    def ensure_jwt_key(self) -> Path:
        """The key slurmctld, slurmdbd and slurmrestd share; the stack signs its tokens with it too."""
        slurm = pwd.getpwnam("slurm")
        return self.secrets.ensure_slurm_jwt_key(slurm.pw_uid, slurm.pw_gid)

    def _config_values(self) -> dict[str, object]:
        jwt_key = self.ensure_jwt_key()
        hardware = run(["slurmd", "-C"]).stdout.splitlines()[0].split()
        node_hardware = " ".join(item for item in hardware if item.split("=")[0] in NODE_HARDWARE_KEYS)
        return {
            "cluster": CLUSTER, "hostname": self.hostname, "host": HOST, "node": NODE,
            "state": self.paths.state, "jwt_key": jwt_key, "node_hardware": node_hardware,
            "storage_pass": self.secrets["mariadb_slurm_password"],
            **{f"{name}_port": port for name, port in PORTS.items()},
        }

    def write_config(self) -> None:
        """/etc/slurm from the templates, and the daemons' state folders.

        slurmd, slurmctld and slurmdbd each run this while slurmrestd may be starting and reading the
        files: a file is replaced in one rename, never seen empty, and only when its content changes.
        """
        values = self._config_values()
        templates = REPO / "stack" / "templates"
        ensure_dir(SLURM_ETC)
        slurm = pwd.getpwnam("slurm")
        for name in CONFIG_FILES:
            target = SLURM_ETC / name
            content = (templates / name).read_text().format_map(values)
            if target.exists() and target.read_text() == content:
                continue
            staged = target.with_name(f".{name}.new")
            if name == "slurmdbd.conf":  # holds the database password
                write_private(staged, content)
                os.chown(staged, slurm.pw_uid, slurm.pw_gid)
            else:
                staged.write_text(content)
                staged.chmod(0o644)
            staged.replace(target)
        ensure_dir(self.paths.state / "slurm", "slurm")
        ensure_dir(self.paths.state / "slurm" / "ctld", "slurm", 0o700)
        ensure_dir(self.paths.state / "slurm" / "d", "root", 0o700)
        ensure_dir(self.paths.jobs, JOB_USER)

    def bootstrap_accounting(self) -> None:
        """Cluster, account and the job user's association: jobs without one are rejected."""
        def exists(entity: str, name: str) -> bool:
            out = run(["sacctmgr", "-nP", "show", entity, name, "format=" + entity]).stdout
            return name in out.split()

        steps = [
            ("cluster", CLUSTER, ["sacctmgr", "-i", "add", "cluster", CLUSTER]),
            ("account", SLURM_ACCOUNT, ["sacctmgr", "-i", "add", "account", SLURM_ACCOUNT,
                                        f"Cluster={CLUSTER}", "Description=local AI-factory project",
                                        "Organization=aifactory"]),
            ("user", JOB_USER, ["sacctmgr", "-i", "add", "user", JOB_USER, f"Account={SLURM_ACCOUNT}",
                                f"DefaultAccount={SLURM_ACCOUNT}", f"Cluster={CLUSTER}"]),
        ]
        for entity, name, command in steps:
            if not exists(entity, name):
                result = run(command)
                if result.returncode != 0:
                    raise RuntimeError(f"{' '.join(command)}: {result.stdout}{result.stderr}")

    def _slurmd_health(self) -> str | None:
        return slurm_node_health(run, NODE)

    def _rest_headers(self) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": JOB_USER, "X-SLURM-USER-TOKEN": self.secrets.slurm_token(JOB_USER, 300)}

    def services(self) -> list[Service]:
        return [
            Service("slurmdbd", ["/usr/sbin/slurmdbd", "-D"], needs=("munge", "mariadb"),
                    health=lambda: port_check(PORTS["slurmdbd"]),
                    prepare=self.write_config, bootstrap=self.bootstrap_accounting, start_timeout_s=60,
                    ports=(PORTS["slurmdbd"],)),
            Service("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"], needs=("slurmdbd",),
                    health=lambda: command_check(["scontrol", "ping"], "is UP"),
                    prepare=self.write_config, start_timeout_s=60, ports=(PORTS["slurmctld"],)),
            Service("slurmd", ["/usr/sbin/slurmd", "-D", "-N", NODE], needs=("slurmctld",),
                    health=self._slurmd_health, prepare=self.write_config, start_timeout_s=60,
                    ports=(PORTS["slurmd"],)),
            Service("slurmrestd", ["/usr/sbin/slurmrestd", "-a", "rest_auth/jwt", "-u", REST_USER,
                                   "-g", REST_USER, f"{HOST}:{PORTS['slurmrestd']}"],
                    needs=("slurmctld",), env={"SLURM_JWT": "daemon"},
                    health=lambda: http_check(f"{REST_URL}/slurm/v0.0.38/ping", self._rest_headers()),
                    url=REST_URL, start_timeout_s=30, ports=(PORTS["slurmrestd"],)),
        ]
