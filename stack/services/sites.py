"""The two sites as services of the stack: each site's hosts, munged, MariaDB, slurmdbd, slurmctld, two slurmd,
slurmrestd and the login node's sshd, every daemon started on its own node (stack/clusters).

``<site>-hosts`` is a one-shot that makes the site's folders, network and node namespaces (and, for site
B, its trixie root); every daemon needs it. The daemons are ordinary supervised services with pid files;
``teardown`` (``stack down``) then ends anything left in the nodes and removes namespaces, network and
mounts. Health checks run on the site's own nodes or across its bridge, as a user of the site would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from stack.clusters import network as net
from stack.clusters import node as nodes
from stack.clusters.node import Bind, NodeSpace, RunDir
from stack.clusters.site import (
    ACCOUNTS,
    JOB_WORKDIR,
    MARIADB_SOCKET,
    MUNGE_SOCKET,
    NODE_LOCAL,
    PORTS,
    SCRATCH,
    SITE_FS,
    TIGHT_BUDGET,
    Node,
    Site,
    SiteLayout,
    SiteSecrets,
    config_values,
    hosts_file_text,
    node_hardware,
    render_configs,
    resolv_conf_text,
)
from stack.clusters.trixie import TrixieRoot, passwd_ids
from stack.process import StackError, Supervised
from stack.services.common import Service, command_check, ensure_dir, http_check, run
from stack.services.login_node import ensure_client_key, ensure_key_pair, login_check, sshd_config_text
from stack.services.slurm import slurm_node_health
from stack.settings import JOB_USER, REPO, REST_USER, SLURM_ACCOUNT, StackPaths, write_private
from stack.settings import PORTS as STACK_PORTS

SSH_FOLDER = f"{NODE_LOCAL}/ssh"  # on the login node
# the RPCs slurmctld answers when asked for jobs' status (squeue, REST /jobs, pyslurm Jobs.load)
JOB_INFO_RPCS = ("REQUEST_JOB_INFO", "REQUEST_JOB_USER_INFO", "REQUEST_JOB_INFO_SINGLE")
Listens = tuple[str, object]  # ("tcp", port) or ("unix", socket path) inside the node
# One accounting database of a few jobs: MariaDB's default caches would double the site's memory.
SMALL_MARIADB = ("--innodb-buffer-pool-size=16M", "--innodb-log-buffer-size=1M", "--key-buffer-size=1M",
                 "--aria-pagecache-buffer-size=1M", "--max-connections=20", "--performance-schema=OFF",
                 "--table-open-cache=200", "--thread-cache-size=2")
# the trixie root's own cluster (./factory slurm24) keeps its database, state and logs there
HIDDEN_IN_TRIXIE = ("/var/lib/mysql", "/var/spool/slurm24", "/var/log/slurm")


S3_RELAY_PORTS = {"a": 18331, "b": 18332}


def host_python_binds(venvs: Path) -> tuple[Bind, ...]:
    """The interpreter the stack's venvs were made with, shown read-only at its own path.

    Site B's trixie root has Python 3.13; the job-runtime and torch-runtime venvs (shown read-only on
    every node) name the host's 3.11 as their base, as a site's module system would provide it."""
    config = venvs / "job-runtime" / "pyvenv.cfg"
    if not config.is_file():
        return ()
    pairs = (line.split("=", 1) for line in config.read_text().splitlines() if "=" in line)
    values = {key.strip(): value.strip() for key, value in pairs}
    home = Path(values.get("home", ""))
    major_minor = ".".join(values.get("version_info", values.get("version", "")).split(".")[:2])
    binary = Path(os.path.realpath(home / f"python{major_minor}"))
    if not major_minor or not binary.is_file():
        return ()
    prefix = binary.parent.parent
    if prefix != Path("/usr"):
        return (Bind(prefix, str(prefix), read_only=True),)
    return (Bind(binary, str(binary), read_only=True),
            Bind(prefix / "lib" / f"python{major_minor}", f"/usr/lib/python{major_minor}", read_only=True))


def _tcp_answers(address: str, port: int) -> str | None:
    try:
        with socket.create_connection((address, port), timeout=1):
            return None
    except OSError as error:
        return f"{address}:{port}: {error.strerror or error}"


class SiteCluster:
    """One site: its nodes, its services for the stack, its Airflow connections, its teardown."""

    def __init__(self, paths: StackPaths, site: Site) -> None:
        self.paths = paths
        self.site = site
        self.layout = SiteLayout(paths, site)
        self.secrets = SiteSecrets(self.layout)
        self.root = TrixieRoot(self.layout) if site.flavour.chroot else None

    def name(self, what: str) -> str:
        return f"{self.site.name}-{what}"

    # ------------------------------------------------------------------ nodes
    def network(self) -> net.SiteNetwork:
        links = tuple(net.Link(self.site.netns(node), self.site.interface(node)) for node in self.site.nodes)
        return net.SiteNetwork(self.site.bridge, self.site.host_address, links)

    def _binds(self, node: Node) -> tuple[Bind, ...]:
        layout = self.layout
        python = host_python_binds(self.paths.state / "venvs") if self.site.flavour.chroot else ()
        # the project on the login node, read-only, as a site installs it for an Edge worker or its users
        # (a host-flavour node has the host's root, where it already is)
        project = (Bind(REPO, str(REPO), read_only=True),) if self.site.flavour.chroot and node.role == "login" else ()
        return (*python, *project, Bind(layout.fs, SITE_FS), Bind(layout.slurm_etc, "/etc/slurm"),
                Bind(layout.munge_etc, "/etc/munge"), Bind(layout.hosts_file, "/etc/hosts", read_only=True),
                Bind(layout.resolv_conf, "/etc/resolv.conf", read_only=True), Bind(layout.home, "/home"),
                Bind(layout.munge_run, "/run/munge"), Bind(layout.node_local(node), NODE_LOCAL))

    def space(self, node: Node) -> NodeSpace:
        """The node's namespaces and mounts (its /run folders are added when it is made: they need uids).

        The stack's state folder (the Airflow host's secrets, databases, job folders) is hidden under a
        tmpfs; its Python environments are shown again, read-only."""
        state = str(self.paths.state)
        hidden = (state, *HIDDEN_IN_TRIXIE) if self.site.flavour.chroot else (state,)
        venvs = self.paths.state / "venvs"
        return NodeSpace(hostname=node.hostname, netns=self.site.netns(node), ns_dir=self.layout.namespaces,
                         root=str(self.layout.root), binds=self._binds(node), hidden=hidden,
                         kept=(Bind(venvs, str(venvs), read_only=True),))

    def on(self, node: Node, command: list[str]) -> list[str]:
        return nodes.on_node(self.space(node), command)

    def run_on(self, node: Node, command: list[str], timeout_s: float = 60.0,
               input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        return nodes.run_on(self.space(node), command, timeout_s=timeout_s, input_text=input_text)

    def checked_on(self, node: Node, command: list[str], what: str, input_text: str | None = None,
                   timeout_s: float = 120.0) -> str:
        result = self.run_on(node, command, timeout_s=timeout_s, input_text=input_text)
        if result.returncode != 0:
            raise RuntimeError(f"{self.site.name} {node.hostname}: {what} failed ({' '.join(command)}): "
                               f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result.stdout

    def ids(self, user: str) -> tuple[int, int]:
        """A user's ids on the site's nodes: the trixie root has its own passwd (munge, mysql differ)."""
        return passwd_ids(self.layout.root, user)

    # ------------------------------------------------------------------ the hosts one-shot
    def _folder(self, path: Path, owner: str = "root", mode: int = 0o755) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, *self.ids(owner))
        path.chmod(mode)
        return path

    def _make_folders(self) -> None:
        """The site's file systems: /p (scratch sticky like a parallel file system's), config, homes, node disks."""
        layout = self.layout
        self._folder(layout.folder, mode=0o700)  # the host's users cannot look into the site; its nodes mount it
        for folder in (layout.fs, layout.etc, layout.slurm_etc, layout.home):
            self._folder(folder)
        self._folder(layout.fs / SCRATCH.removeprefix(f"{SITE_FS}/"), mode=0o1777)
        self._folder(layout.fs / JOB_WORKDIR.removeprefix(f"{SITE_FS}/"), JOB_USER)
        self._folder(layout.home / JOB_USER, JOB_USER, 0o700)
        self._folder(layout.munge_etc, "munge", 0o700)
        self._folder(layout.munge_run.parent)
        self._folder(layout.munge_run, "munge", 0o755)
        for file, text in ((layout.hosts_file, hosts_file_text(self.site)),
                           (layout.resolv_conf, resolv_conf_text(self.site))):
            file.write_text(text)
            file.chmod(0o644)
        for node in self.site.nodes:
            self._node_folders(node)

    def _node_folders(self, node: Node) -> None:
        local = self._folder(self.layout.node_local(node))
        if node.role == "ctl":
            self._folder(local / "slurm", "slurm")
            self._folder(local / "slurm" / "ctld", "slurm", 0o700)
            self._folder(local / "munge", "munge", 0o700)
            self._folder(local / "mysql", "mysql", 0o700)
        if node.role == "compute":
            self._folder(local / "slurm" / "d" / node.hostname, mode=0o755)
        if node.role == "login":
            self._folder(local / "ssh")
            self._folder(local / "ssh" / "authorized_keys")

    def _run_dirs(self) -> tuple[RunDir, ...]:
        return (RunDir("/run/sshd", 0, 0, 0o755), RunDir("/run/mysqld", *self.ids("mysql")),
                RunDir("/run/slurm", *self.ids("slurm")))

    def hosts_ready(self) -> bool:
        return ((self.root is None or self.root.is_ready()) and net.is_up(self.network())
                and all(nodes.is_ready(self.space(node)) for node in self.site.nodes))

    def make_hosts(self) -> None:
        """Idempotent: what exists stays (running daemons keep their nodes)."""
        if self.root is not None:
            self.root.ensure()
        self._make_folders()
        net.create(self.network())
        for node in self.site.nodes:
            nodes.create(replace(self.space(node), run_dirs=self._run_dirs()))
        self.write_info_file()

    # ------------------------------------------------------------------ configuration
    def _write_if_changed(self, target: Path, content: str, owner: str, mode: int) -> None:
        """Replaced in one rename and only when it changed: daemons may be reading it."""
        if target.exists() and target.read_text() == content:
            return
        fd, staged = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chown(staged, *self.ids(owner))
        os.chmod(staged, mode)
        os.replace(staged, target)

    def write_slurm_config(self) -> None:
        hardware = node_hardware(run(["slurmd", "-C"]).stdout.splitlines()[0])
        values = config_values(self.site, hardware, self.secrets.get("mariadb_slurm_password"))
        for name, content in render_configs(self.site, values).items():
            private = name == "slurmdbd.conf"
            self._write_if_changed(self.layout.slurm_etc / name, content, "slurm" if private else "root",
                                   0o600 if private else 0o644)
        key = self.secrets.ensure_jwt_key()
        os.chown(key, *self.ids("slurm"))
        key.chmod(0o600)

    def prepare_munge(self) -> None:
        """A key of the site's own: nothing signed by the host's munged (or the other site's) is accepted."""
        key = self.layout.munge_etc / "munge.key"
        if not key.exists():
            result = run(["mungekey", "--create", "--keyfile", str(key)])
            if result.returncode != 0:
                raise RuntimeError(f"mungekey --create: {result.stderr}")
        os.chown(key, *self.ids("munge"))
        key.chmod(0o400)

    def prepare_mariadb(self) -> None:
        if (self.layout.node_local(self.site.ctl) / "mysql" / "mysql").exists():
            return
        self.checked_on(self.site.ctl, ["mariadb-install-db", "--user=mysql", f"--datadir={NODE_LOCAL}/mysql",
                                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                        "mariadb-install-db", timeout_s=180)

    def bootstrap_mariadb(self) -> None:
        password = self.secrets.get("mariadb_slurm_password").replace("'", "''")
        statements = ["CREATE DATABASE IF NOT EXISTS slurm_acct_db;",
                      f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{password}';",
                      f"ALTER USER 'slurm'@'localhost' IDENTIFIED BY '{password}';",
                      "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"]
        self.checked_on(self.site.ctl, ["mariadb", f"--socket={MARIADB_SOCKET}", "-u", "root"],
                        "creating the accounting database user", input_text="\n".join(statements))

    def accounting_steps(self) -> list[tuple[str, str, list[str]]]:
        """(entity, name, sacctmgr command): the cluster, the accounts, the job user in both (demo by default)."""
        cluster = self.site.cluster
        steps = [("cluster", cluster, ["sacctmgr", "-i", "add", "cluster", cluster])]
        for account, description in ACCOUNTS.items():
            limit = [f"GrpTRESMins={TIGHT_BUDGET}"] if account == "tight" else []
            steps.append(("account", account, ["sacctmgr", "-i", "add", "account", account, f"Cluster={cluster}",
                                               f"Description={description}", "Organization=aifactory", *limit]))
        steps.append(("user", JOB_USER, ["sacctmgr", "-i", "add", "user", JOB_USER, f"Account={','.join(ACCOUNTS)}",
                                         f"DefaultAccount={SLURM_ACCOUNT}", f"Cluster={cluster}"]))
        return steps

    def bootstrap_accounting(self) -> None:
        ctl = self.site.ctl
        for entity, name, command in self.accounting_steps():
            listed = self.run_on(ctl, ["sacctmgr", "-nP", "show", entity, name, f"format={entity}"]).stdout.split()
            if name not in listed:
                self.checked_on(ctl, command, f"sacctmgr add {entity} {name}")

    def prepare_login(self) -> None:
        """Host key once; the stack's client key authorized for the job user; the Airflow side's known_hosts."""
        ssh = self.layout.node_local(self.site.login) / "ssh"
        host_key = ssh / "ssh_host_ed25519_key"
        ensure_key_pair(host_key, f"sshd@{self.site.login.hostname}")
        authorized = ssh / "authorized_keys" / JOB_USER
        authorized.write_text(Path(f"{ensure_client_key(self.paths)}.pub").read_text())
        authorized.chmod(0o644)
        config = sshd_config_text(str(self.site.login.address), PORTS["ssh"], f"{SSH_FOLDER}/ssh_host_ed25519_key",
                                  f"{SSH_FOLDER}/authorized_keys")
        (ssh / "sshd_config").write_text(config)
        key_type, key_text = Path(f"{host_key}.pub").read_text().split()[:2]
        ensure_dir(self.paths.ssh, "root")
        self.layout.known_hosts.write_text(f"{self.site.login.address} {key_type} {key_text}\n")
        self.layout.known_hosts.chmod(0o644)

    # ------------------------------------------------------------------ health
    def _ctl_check(self, command: list[str], expect: str | None = None) -> Callable[[], str | None]:
        return lambda: command_check(self.on(self.site.ctl, command), expect)

    def _port_check(self, node: Node, port: int) -> Callable[[], str | None]:
        def check() -> str | None:
            try:
                with socket.create_connection((str(node.address), port), timeout=1):
                    return None
            except OSError as error:
                return f"{node.address}:{port}: {error.strerror or error}"
        return check

    def _node_health(self, node: Node) -> Callable[[], str | None]:
        def run_on_ctl(command: list[str], timeout_s: float = 10) -> subprocess.CompletedProcess[str]:
            return self.run_on(self.site.ctl, command, timeout_s=timeout_s)
        return lambda: slurm_node_health(run_on_ctl, node.hostname)

    def rpc_counts(self) -> dict[str, int]:
        """slurmctld's RPC counts by message type since its start (``sdiag`` on the controller node)."""
        counts: dict[str, int] = {}
        in_section = False
        for line in self.checked_on(self.site.ctl, ["sdiag"], "sdiag").splitlines():
            if line.startswith("Remote Procedure Call statistics by message type"):
                in_section = True
            elif in_section and line.strip() and not line[0].isspace():
                break  # the next section (by user, pending RPCs)
            elif in_section and "count:" in line:
                counts[line.split()[0]] = int(line.split("count:")[1].split()[0])
        if not counts:
            raise StackError(f"{self.site.name}: no RPC statistics in sdiag's answer")
        return counts

    def job_info_rpcs(self) -> int:
        """The job-information RPCs slurmctld answered since its start: what status polling costs it."""
        return sum(self.rpc_counts().get(kind, 0) for kind in JOB_INFO_RPCS)

    def rest_headers(self) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": JOB_USER, "X-SLURM-USER-TOKEN": self.secrets.token(JOB_USER, 300)}

    def _rest_health(self) -> str | None:
        return http_check(f"{self.site.rest_url}/slurm/{self.site.flavour.rest_ping}/ping", self.rest_headers())

    def _login_health(self) -> str | None:
        return login_check(str(self.site.login.address), PORTS["ssh"], self.paths.ssh_key, self.layout.known_hosts)

    # ------------------------------------------------------------------ untracked listeners
    def listener(self, node: Node, listens: Listens) -> str | None:
        """Who listens on the node's port or socket (``ss`` in its network namespace), or None."""
        kind, where = listens
        query = ["ss", "-Hltnp", f"sport = :{where}"] if kind == "tcp" else ["ss", "-Hlxp", "src", str(where)]
        result = subprocess.run(net.in_namespace(self.site.netns(node), query), capture_output=True, text=True,
                                timeout=10)
        return result.stdout.strip() or None

    def _guarded(self, name: str, node: Node, listens: Listens,
                 prepare: Callable[[], None] | None) -> Callable[[], None]:
        """A daemon's port or socket already held is an error, not a reason to think it started: a process
        the stack does not track answers there (or its own, unhealthy one, which ``restart`` replaces)."""
        def guarded() -> None:
            holder = self.listener(node, listens)
            if holder:
                found = re.search(r"pid=(\d+)", holder)
                ours = found is not None and int(found.group(1)) == Supervised(name, self.paths.run,
                                                                               self.paths.logs).pid()
                if ours:
                    raise StackError(f"{name}: {listens[1]} on {node.hostname} is held by its own process, which is "
                                     f"unhealthy: {holder}\nreplace it with: python -m stack restart {name}")
                raise StackError(f"{name}: {listens[1]} on {node.hostname} is held by a process the stack does not "
                                 f"track: {holder}\nend that process (stack down ends everything left in the "
                                 "site's nodes) and run up again")
            if prepare:
                prepare()
        return guarded

    # ------------------------------------------------------------------ services
    def _daemon(self, what: str, node: Node, command: list[str], needs: tuple[str, ...], health, listens: Listens,
                **details: Any) -> Service:
        env = {"HOME": "/root", **details.pop("env", {})}
        prepare = self._guarded(self.name(what), node, listens, details.pop("prepare", None))
        return Service(self.name(what), self.on(node, command), needs=tuple(self.name(n) for n in needs),
                       health=health, env=env, prepare=prepare, **details)

    def services(self) -> list[Service]:
        site, ctl, login = self.site, self.site.ctl, self.site.login
        munged = ["setpriv", "--reuid=munge", "--regid=munge", "--clear-groups", "/usr/sbin/munged", "--foreground",
                  "--force", "--key-file=/etc/munge/munge.key", f"--socket={MUNGE_SOCKET}",
                  f"--seed-file={NODE_LOCAL}/munge/munged.seed"]
        mariadbd = ["/usr/sbin/mariadbd", "--user=mysql", f"--datadir={NODE_LOCAL}/mysql", f"--socket={MARIADB_SOCKET}",
                    "--skip-networking", "--pid-file=/run/mysqld/mariadbd.pid", "--skip-name-resolve",
                    "--innodb-lock-wait-timeout=900", *SMALL_MARIADB]
        restd = ["/usr/sbin/slurmrestd", "-a", "rest_auth/jwt", "-u", REST_USER, "-g", REST_USER,
                 f"{ctl.address}:{PORTS['slurmrestd']}"]
        slurm = self.write_slurm_config
        return [
            Service(self.name("hosts"), [], health=lambda: None, oneshot=True, is_current=self.hosts_ready,
                    bootstrap=self.make_hosts, start_timeout_s=900, restarts_dependents=True),
            self._daemon("munged", ctl, munged, ("hosts",), self._ctl_check(["sh", "-c", "munge -n | unmunge"]),
                         ("unix", MUNGE_SOCKET), prepare=self.prepare_munge, start_timeout_s=15),
            self._daemon("mariadb", ctl, mariadbd, ("hosts",),
                         self._ctl_check(["mariadb-admin", f"--socket={MARIADB_SOCKET}", "ping"], "alive"),
                         ("unix", MARIADB_SOCKET), prepare=self.prepare_mariadb, bootstrap=self.bootstrap_mariadb,
                         start_timeout_s=120),
            self._daemon("slurmdbd", ctl, ["/usr/sbin/slurmdbd", "-D"], ("munged", "mariadb"),
                         self._port_check(ctl, PORTS["slurmdbd"]), ("tcp", PORTS["slurmdbd"]), prepare=slurm,
                         bootstrap=self.bootstrap_accounting, start_timeout_s=60),
            self._daemon("slurmctld", ctl, ["/usr/sbin/slurmctld", "-D", "-i"], ("slurmdbd",),
                         self._ctl_check(["scontrol", "ping"], "is UP"), ("tcp", PORTS["slurmctld"]), prepare=slurm,
                         start_timeout_s=60),
            *(self._daemon(f"slurmd-{node.short}", node, ["/usr/sbin/slurmd", "-D", "-N", node.hostname],
                           ("slurmctld",), self._node_health(node), ("tcp", PORTS["slurmd"]), prepare=slurm,
                           start_timeout_s=60)
              for node in site.computes),
            self._daemon("slurmrestd", ctl, restd, ("slurmctld",), self._rest_health, ("tcp", PORTS["slurmrestd"]),
                         env={"SLURM_JWT": "daemon"}, url=site.rest_url, start_timeout_s=30),
            self.s3_relay(),
            # sshd re-executes itself, so it must be started by its absolute path
            self._daemon("sshd", login, ["/usr/sbin/sshd", "-D", "-e", "-f", f"{SSH_FOLDER}/sshd_config"], ("hosts",),
                         self._login_health, ("tcp", PORTS["ssh"]), prepare=self.prepare_login,
                         url=f"ssh://{JOB_USER}@{login.address}", start_timeout_s=20),
        ]

    # ------------------------------------------------------------------ S3 for the jobs
    @property
    def s3_relay_port(self) -> int:
        """A port of its own per site: the supervisor tells services apart by port."""
        return S3_RELAY_PORTS[self.site.letter]

    @property
    def job_s3_endpoint(self) -> str:
        return f"http://{self.site.host_address.ip}:{self.s3_relay_port}"

    def s3_relay(self) -> Service:
        """The stack's S3 as the site's nodes reach it: a TCP relay on the host's end of the site's bridge (the
        nodes have no other route; S3 itself listens on the loopback only), as a site's S3 proxy would be."""
        address, port = str(self.site.host_address.ip), self.s3_relay_port
        command = ["socat", f"TCP-LISTEN:{port},bind={address},fork,reuseaddr", f"TCP:127.0.0.1:{STACK_PORTS['s3']}"]
        return Service(self.name("s3-relay"), command, health=lambda: _tcp_answers(address, port),
                       needs=(self.name("hosts"),), user="nobody", ports=(port,), url=self.job_s3_endpoint,
                       start_timeout_s=10)

    # ------------------------------------------------------------------ clients
    def connections(self) -> dict[str, dict[str, Any]]:
        """The site as Airflow sees it: the login node over SSH, and slurmrestd with job files over SSH.

        Job folders live on the site's /p, which the Airflow host does not see: both go through the login node.
        """
        site, login = self.site, self.site.login
        common = {"cluster": site.cluster, "account": SLURM_ACCOUNT, "job_workdir": JOB_WORKDIR,
                  "job_runtime": str(self.paths.venv("job-runtime")), "job_s3_endpoint": self.job_s3_endpoint}
        ssh = {"key_file": str(self.paths.ssh_key), "known_hosts": str(self.layout.known_hosts)}
        return {
            f"factory_slurm_{site.name}": {
                "conn_type": "slurm", "host": str(login.address), "port": PORTS["ssh"], "login": JOB_USER,
                "extra": {"transport": "ssh", **ssh, **common}},
            f"factory_slurm_{site.name}_rest": {
                "conn_type": "slurm", "host": str(site.ctl.address), "port": PORTS["slurmrestd"], "schema": "http",
                "login": JOB_USER, "password": self.secrets.stable_token(JOB_USER),
                "extra": {"transport": "rest", "files": "ssh", "api_version": "auto", "ssh_host": str(login.address),
                          "ssh_port": PORTS["ssh"], "ssh_user": JOB_USER, **ssh, **common}},
            # for tasks its Edge worker runs on the login node: the Slurm commands and /p are right there
            **({f"factory_slurm_{site.name}_local": {"conn_type": "slurm", "login": JOB_USER,
                                                     "extra": {"transport": "local", **common}}}
               if site.edge_queue else {}),
        }

    def write_info_file(self) -> None:
        site = self.site
        info = {
            "site": site.name, "cluster": site.cluster, "release": site.flavour.release,
            "nodes": {node.hostname: str(node.address) for node in site.nodes},
            "computes": [node.hostname for node in site.computes], "job_user": JOB_USER,
            "accounts": list(ACCOUNTS), "job_workdir": JOB_WORKDIR, "bridge": site.bridge,
            "host_address": str(site.host_address.ip),
            "login": {"host": str(site.login.address), "port": PORTS["ssh"], "user": JOB_USER,
                      "key_file": str(self.paths.ssh_key), "known_hosts": str(self.layout.known_hosts)},
            "slurmrestd": {"url": site.rest_url, "user": JOB_USER, "token": self.secrets.stable_token(JOB_USER),
                           "ping": site.flavour.rest_ping},
            "connections": sorted(self.connections()),
        }
        write_private(self.layout.info_file, json.dumps(info, indent=2))

    # ------------------------------------------------------------------ down
    def cancel_jobs(self, pid_of: Callable[[str], int | None]) -> None:
        """Jobs end before their nodes go: scancel on the controller, then wait (15 s at most) for them to leave."""
        if pid_of(self.name("slurmctld")) is None:
            return
        ctl = self.site.ctl
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run_on(ctl, ["scancel", "--full", f"--user={JOB_USER}"], timeout_s=15)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                listed = self.run_on(ctl, ["squeue", "-h", "-t", "running,completing"], timeout_s=10)
                if listed.returncode != 0 or not listed.stdout.strip():
                    return
                time.sleep(0.5)

    def teardown(self, progress: Callable[[str], None] = print) -> list[int]:
        """After the daemons stopped: end what is left in the nodes, drop namespaces, network and mounts.

        Every step runs even when one before it failed (a half torn-down site is the worst outcome); the
        failures are raised together at the end. Returns the pids that were still inside the nodes."""
        leftovers: list[int] = []
        failures: list[str] = []

        def step(action: Callable[[], object]) -> None:
            try:
                action()
            except (StackError, OSError, subprocess.SubprocessError) as error:
                failures.append(str(error))

        for node in self.site.nodes:
            space = self.space(node)
            step(lambda space=space: leftovers.extend(nodes.end_processes(space)))
            step(lambda space=space: nodes.release(space))
        step(lambda: net.teardown(self.network()))
        if self.root is not None:
            step(self.root.unmount)
        if nodes.is_mount_point(self.layout.namespaces):
            step(lambda: subprocess.run(["umount", str(self.layout.namespaces)], capture_output=True, check=True))
        if failures:
            raise StackError(f"{self.site.name} teardown: " + "; ".join(failures))
        progress(f"  {self.site.name + ' nodes':<22} released")
        return leftovers
