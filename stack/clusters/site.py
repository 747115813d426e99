"""What each local site is: its nodes and addresses, its Slurm flavour, its folders, its configuration.

Site A runs bookworm's Slurm 22.05 (the host's binaries), site B Slurm 24.11 from the trixie root the
stack builds for ``./factory slurm24``. Both have a controller node (munged, MariaDB, slurmdbd,
slurmctld, slurmrestd), two compute nodes (slurmd) and a login node (sshd and the Slurm commands).
Inside a node the daemons use their usual ports (6817-6820, 22): each node has its own addresses.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from stack.settings import JOB_USER, TOKEN_LIFESPAN_S, StackPaths, hs256_token, token_expiry, write_private

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Paths inside every node (what a user logged in to the site sees)
SITE_FS = "/p"  # the site's shared file system, like a parallel file system
SCRATCH = "/p/scratch"
JOB_WORKDIR = "/p/scratch/airflow-jobs"
NODE_LOCAL = "/var/local"  # the node's own disk: daemon state, database, host keys
MUNGE_SOCKET = "/run/munge/munge.socket.2"
MARIADB_SOCKET = "/run/mysqld/mysqld.sock"
JWT_KEY = "/etc/slurm/jwt_hs256.key"
SLURM_CONFIG_FILES = ("slurm.conf", "cgroup.conf", "gres.conf", "slurmdbd.conf")  # slurmdbd.conf holds a password: 0600
PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819, "slurmrestd": 6820, "ssh": 22}
ACCOUNTS = {"demo": "the site's default project", "tight": "a small budget, for budget tests"}
TIGHT_BUDGET = "cpu=60"  # GrpTRESMins of the account "tight": one CPU-hour in all
MAX_NODE_MEMORY_MB = 4096  # each fake node claims at most this much of the machine's memory
MIN_JOB_AGE_S = 300
FAKE_GPUS = 2  # per compute node, in gres.conf


@dataclass(frozen=True)
class Flavour:
    """Which Slurm a site runs and where its binaries come from."""

    release: str  # "22.05"
    templates: str  # folder under templates/
    rest_ping: str  # an OpenAPI version this release serves, for the health check
    chroot: bool  # True: the nodes run inside the trixie root


HOST_22_05 = Flavour("22.05", "22.05", "v0.0.38", chroot=False)
TRIXIE_24_11 = Flavour("24.11", "24.11", "v0.0.41", chroot=True)


@dataclass(frozen=True)
class Node:
    role: str  # ctl | compute | login
    short: str  # ctl, node1, node2, login
    hostname: str  # a-ctl
    address: IPv4Address


@dataclass(frozen=True)
class Site:
    name: str  # site_a: the catalogue entry, the Slurm cluster name, the service prefix
    letter: str  # a: host names a-ctl, a-node1, ...
    subnet: IPv4Network
    flavour: Flavour
    first_job_id: int  # far from the other clusters' ids, so a log line never names the wrong cluster
    edge_queue: str | None = None  # an Airflow Edge worker on the login node takes this queue (production)

    @property
    def cluster(self) -> str:
        return self.name

    @property
    def bridge(self) -> str:
        return f"afs{self.letter}0"

    @property
    def host_address(self) -> IPv4Interface:
        """The Airflow host's own address on the site's bridge (it reaches the login node and slurmrestd)."""
        return IPv4Interface(f"{self.subnet[1]}/{self.subnet.prefixlen}")

    @property
    def nodes(self) -> tuple[Node, ...]:
        def node(role: str, short: str, host_part: int) -> Node:
            return Node(role, short, f"{self.letter}-{short}", self.subnet[host_part])

        return (node("ctl", "ctl", 10), node("compute", "node1", 11), node("compute", "node2", 12),
                node("login", "login", 20))

    def node(self, short: str) -> Node:
        return next(node for node in self.nodes if node.short == short)

    @property
    def ctl(self) -> Node:
        return self.node("ctl")

    @property
    def login(self) -> Node:
        return self.node("login")

    @property
    def computes(self) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.role == "compute")

    def netns(self, node: Node) -> str:
        """The node's network namespace, also the name of the veth end on the site's bridge (<= 15 chars)."""
        return f"afs{self.letter}-{node.short}"

    def interface(self, node: Node) -> IPv4Interface:
        return IPv4Interface(f"{node.address}/{self.subnet.prefixlen}")

    @property
    def rest_url(self) -> str:
        return f"http://{self.ctl.address}:{PORTS['slurmrestd']}"


SITE_A = Site("site_a", "a", IPv4Network("10.77.1.0/24"), HOST_22_05, first_job_id=10_000_001, edge_queue="site_a")
SITE_B = Site("site_b", "b", IPv4Network("10.77.2.0/24"), TRIXIE_24_11, first_job_id=20_000_001)
SITES = (SITE_A, SITE_B)


def sites_enabled() -> bool:
    """The two sites are part of ``./factory stack up`` unless ``FACTORY_WITH_SITES=0``."""
    return os.environ.get("FACTORY_WITH_SITES", "1") != "0"


@dataclass(frozen=True)
class SiteLayout:
    """Where a site lives on the host; nodes see these folders at their own paths, never these."""

    paths: StackPaths
    site: Site

    @property
    def folder(self) -> Path:
        return self.paths.state / "clusters" / self.site.name

    @property
    def fs(self) -> Path:
        return self.folder / "fs"

    @property
    def etc(self) -> Path:
        return self.folder / "etc"

    @property
    def slurm_etc(self) -> Path:
        return self.etc / "slurm"

    @property
    def munge_etc(self) -> Path:
        return self.etc / "munge"

    @property
    def hosts_file(self) -> Path:
        return self.etc / "hosts"

    @property
    def resolv_conf(self) -> Path:
        return self.etc / "resolv.conf"

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def munge_run(self) -> Path:
        """The site's one munged socket folder, ``/run/munge`` on every node."""
        return self.folder / "run" / "munge"

    def node_local(self, node: Node) -> Path:
        return self.folder / "nodes" / node.hostname

    @property
    def namespaces(self) -> Path:
        """Where the nodes' mount and UTS namespaces are kept (bind mounts of nsfs files)."""
        return self.paths.run / "clusters" / self.site.name

    @property
    def root(self) -> Path:
        """The nodes' root: the host's for a host flavour, else a writable overlay of the trixie root."""
        return self.folder / "root" if self.site.flavour.chroot else Path("/")

    @property
    def root_upper(self) -> Path:
        return self.folder / "root-upper"

    @property
    def root_work(self) -> Path:
        return self.folder / "root-work"

    @property
    def jwt_key(self) -> Path:
        return self.slurm_etc / "jwt_hs256.key"

    @property
    def known_hosts(self) -> Path:
        """The login node's host key on the Airflow side, for StrictHostKeyChecking=yes."""
        return self.paths.ssh / f"known_hosts_{self.site.name}"

    @property
    def secrets_file(self) -> Path:
        return self.paths.secrets / f"{self.site.name}-secrets.json"

    @property
    def info_file(self) -> Path:
        """Endpoints and a token for clients (tests); 0600 beside the stack's own."""
        return self.paths.secrets / f"{self.site.name}.json"


# ---------------------------------------------------------------------------------------------- secrets
class SiteSecrets:
    """The site's generated secrets (database password, a stable JWT for the job user), kept apart from the
    host stack's: a site shares no credential with the Airflow host."""

    def __init__(self, layout: SiteLayout) -> None:
        self.layout = layout

    def _values(self) -> dict[str, str]:
        file = self.layout.secrets_file
        return json.loads(file.read_text()) if file.exists() else {}

    def _store(self, values: dict[str, str]) -> None:
        self.layout.paths.ensure()
        write_private(self.layout.secrets_file, json.dumps(values, indent=2))

    def get(self, name: str) -> str:
        values = self._values()
        if name not in values:
            values[name] = secrets.token_urlsafe(24)
            self._store(values)
        return values[name]

    def ensure_jwt_key(self) -> Path:
        """Made once, root-only; ``prepare`` of the site hands it to its SlurmUser."""
        key = self.layout.jwt_key
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            write_private(key, os.urandom(32))
        return key

    def token(self, username: str = JOB_USER, lifespan_s: int = 300) -> str:
        return hs256_token(self.ensure_jwt_key().read_bytes(), username, lifespan_s)

    def stable_token(self, username: str = JOB_USER) -> str:
        """The stored token, renewed when less than half its life is left: the Airflow connection stays the same
        from one ``up`` to the next (a changed connection re-imports them all)."""
        values = self._values()
        name = f"token_{username}"
        token = values.get(name)
        if token is None or token_expiry(token) - time.time() < TOKEN_LIFESPAN_S / 2:
            values[name] = token = self.token(username, TOKEN_LIFESPAN_S)
            self._store(values)
        return token


# ---------------------------------------------------------------------------------------------- configuration
def node_hardware(slurmd_c_line: str) -> str:
    """The topology of ``slurmd -C``; memory capped: two fake nodes share one machine."""
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    fields = dict(item.split("=", 1) for item in slurmd_c_line.split() if "=" in item)
    memory = min(int(fields.get("RealMemory", MAX_NODE_MEMORY_MB)), MAX_NODE_MEMORY_MB)
    return " ".join([*(f"{key}={fields[key]}" for key in keep if key in fields), f"RealMemory={memory}"])


def node_lines(site: Site, hardware: str) -> str:
    return "\n".join(f"NodeName={node.hostname} NodeAddr={node.address} NodeHostname={node.hostname} "
                     f"{hardware} Gres=gpu:fake:{FAKE_GPUS} State=UNKNOWN" for node in site.computes)


def config_values(site: Site, hardware: str, storage_pass: str) -> dict[str, object]:
    ctl = site.ctl
    return {
        "cluster": site.cluster, "release": site.flavour.release, "ctl_host": ctl.hostname,
        "ctl_address": ctl.address, "munge_socket": MUNGE_SOCKET, "jwt_key": JWT_KEY,
        "state": f"{NODE_LOCAL}/slurm", "first_job_id": site.first_job_id, "min_job_age": MIN_JOB_AGE_S,
        "node_lines": node_lines(site, hardware), "nodes": ",".join(node.hostname for node in site.computes),
        "storage_pass": storage_pass, "mariadb_socket": MARIADB_SOCKET,
        **{f"{name}_port": port for name, port in PORTS.items()},
    }


def render_configs(site: Site, values: dict[str, object]) -> dict[str, str]:
    """slurm.conf, cgroup.conf, gres.conf and slurmdbd.conf for the site's release."""
    folder = TEMPLATES / site.flavour.templates
    return {name: (folder / name).read_text().format_map(values) for name in SLURM_CONFIG_FILES}


def resolv_conf_text(site: Site) -> str:
    """No name server: the site's names are in /etc/hosts, and the host's resolver is not the site's."""
    return f"# {site.name}: no DNS inside the site; node names are in /etc/hosts\n"


def hosts_file_text(site: Site) -> str:
    """Every node of the site by name, as a site's DNS would answer; nothing of the host's /etc/hosts."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             *(f"{node.address}\t{node.hostname}" for node in site.nodes)]
    return "\n".join(lines) + "\n"
