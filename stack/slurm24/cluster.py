"""A second, real Slurm cluster on this machine: Slurm 24.11 from Debian trixie, in a chroot.

The host's Slurm 22.05 (bookworm) serves slurmrestd OpenAPI v0.0.36-38 only; this cluster serves
v0.0.40-42, so the REST transport's newer JSON shapes run against a real server. It shares nothing
with the host's cluster: its own munge (socket in the chroot's /run), its own MariaDB (socket only,
no TCP port), its own JWT key, cluster ``factory24`` on ports 7817-7820, no cgroups (the host's slurmd
owns the v1 hierarchy). Jobs run inside the chroot; the stack's jobs folder is bind-mounted at the same
path, so what the host stages is what the job sees, under the same uid.

``up`` is idempotent: debootstrap and apt run once (stamp files), healthy daemons are left alone, so
a second ``up`` takes about a second. ``down`` cancels jobs, stops the daemons by pid file, ends any
process still rooted in the chroot (job steps) and unmounts everything it mounted.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from stack.process import StackError, Supervised, process_start_time
from stack.services import Service, command_check, http_check, port_check, slurm_node_health
from stack.settings import HOST, JOB_USER, REST_USER, SLURM_ACCOUNT, StackPaths, short_hostname, write_private
from stack.startup import Outcome, wait_healthy

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("hostname", "procps")  # the batch script prints $(hostname); ps for debugging
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "slurmrestd", "slurm-wlm-jwt-plugin",
            "mariadb-server")
CLUSTER = "factory24"
NODE = "node24"
PORTS = {"slurmctld": 7817, "slurmd": 7818, "slurmdbd": 7819, "slurmrestd": 7820}
FIRST_JOB_ID = 24_000_001
MIN_JOB_AGE_S = 10
SPOOL = "/var/spool/slurm24"  # inside the chroot
MARIADB_SOCKET = "/run/mysqld/mysqld.sock"  # inside the chroot; MariaDB's compiled-in default
JWT_KEY = "/etc/slurm/jwt_hs256.key"  # inside the chroot
TOKEN_LIFESPAN_S = 30 * 86400
PING_VERSION = "v0.0.41"  # any version 24.11 serves, for the health check
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TEMPLATES = Path(__file__).resolve().parent / "templates"
PUBLIC_CONFIG = ("slurm.conf", "cgroup.conf", "gres.conf")
CONFIG_FILES = (*PUBLIC_CONFIG, "slurmdbd.conf")  # slurmdbd.conf holds the database password: 0600


def say(line: str) -> None:
    print(f"[slurm24] {line}", flush=True)


def _unescape_mount_path(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [_unescape_mount_path(line.split()[4]) for line in lines]


class Slurm24:
    """Install, start, stop and describe the 24.11 cluster under ``<state>/chroots/trixie``."""

    def __init__(self, paths: StackPaths | None = None) -> None:
        self.paths = paths or StackPaths.from_env()
        self.root = self.paths.state / "chroots" / SUITE
        self.run_dir = self.paths.run / "slurm24"
        self.log_dir = self.paths.logs / "slurm24"
        self.info_file = self.paths.secrets / "slurm24.json"
        self.secrets_file = self.paths.secrets / "slurm24-secrets.json"
        self.url = f"http://{HOST}:{PORTS['slurmrestd']}"

    # ------------------------------------------------------------------ helpers
    def inside(self, path: str | Path) -> Path:
        """A path of the chroot, as seen from the host."""
        return self.root / str(path).lstrip("/")

    def _user(self, name: str) -> tuple[int, int] | None:
        """uid and gid of a user of the chroot (its own /etc/passwd, not the host's)."""
        for line in self.inside("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
        return None

    def _ids(self, name: str) -> tuple[int, int]:
        ids = self._user(name)
        if ids is None:
            raise StackError(f"user {name} does not exist in the chroot {self.root}")
        return ids

    def chroot(self, command: list[str], user: str | None = None) -> list[str]:
        """``command`` run inside the chroot (as ``user``, by numeric ids: chroot(8) looks names up outside)."""
        spec = []
        if user is not None:
            uid, gid = self._ids(user)
            spec = [f"--userspec={uid}:{gid}", "--groups="]
        return ["/usr/sbin/chroot", *spec, str(self.root), *command]

    def run(self, command: list[str], *, user: str | None = None, input_text: str | None = None,
            timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.chroot(command, user), input=input_text, capture_output=True, text=True,
                              timeout=timeout_s, env=self._env())

    def checked(self, command: list[str], what: str, *, input_text: str | None = None,
                timeout_s: float = 60.0) -> str:
        result = self.run(command, input_text=input_text, timeout_s=timeout_s)
        if result.returncode != 0:
            raise StackError(f"slurm24: {what} failed ({' '.join(command)}): "
                             f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result.stdout

    @staticmethod
    def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"PATH": DAEMON_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(extra or {})}

    def supervised(self, name: str) -> Supervised:
        return Supervised(name, self.run_dir, self.log_dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One ``up`` or ``down`` at a time (CI and a developer may both run one)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / "lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @property
    def installed(self) -> bool:
        return self._packages_stamp.exists() and self._packages_stamp.read_text() == self._packages_wanted

    # ------------------------------------------------------------------ install (cold path, once)
    @property
    def _bootstrap_stamp(self) -> Path:
        return self.root / ".aifactory-bootstrapped"

    @property
    def _packages_stamp(self) -> Path:
        return self.root / ".aifactory-packages"

    @property
    def _packages_wanted(self) -> str:
        return " ".join(PACKAGES) + "\n"

    def _host_debootstrap(self) -> None:
        if shutil.which("debootstrap"):
            return
        say("apt-get install debootstrap (host)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            result = subprocess.run(install, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise StackError(f"slurm24: installing debootstrap on the host failed: {result.stderr[-1000:]}")

    def _unmount_under(self, folder: Path) -> None:
        prefix = str(folder).rstrip("/") + "/"
        for point in reversed(mount_points()):
            if point.startswith(prefix) or point == str(folder):
                subprocess.run(["umount", "-l", point], capture_output=True)

    def _debootstrap(self) -> None:
        if self._bootstrap_stamp.exists():
            return
        self._host_debootstrap()
        partial = self.root.with_name(self.root.name + ".partial")
        for leftover in (partial, self.root):  # an interrupted earlier attempt: start over, mounts first
            if leftover.exists():
                self._unmount_under(leftover)
                shutil.rmtree(leftover)
        partial.parent.mkdir(parents=True, exist_ok=True)
        say(f"debootstrap {SUITE} into {self.root} (once; ~30-40 s)")
        began = time.monotonic()
        result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                                 SUITE, str(partial), MIRROR], capture_output=True, text=True)
        if result.returncode != 0:
            self._unmount_under(partial)
            log = partial / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-2000:] if log.exists() else (result.stdout + result.stderr)[-2000:]
            raise StackError(f"slurm24: debootstrap {SUITE} from {MIRROR} failed:\n{detail}")
        partial.rename(self.root)
        self._bootstrap_stamp.write_text(f"{SUITE} {MIRROR} {time.monotonic() - began:.0f}s\n")

    def _apt_install(self) -> None:
        if self.installed:
            return
        say(f"apt-get install {' '.join(PACKAGES)} (in the chroot, once; ~20 s)")
        # package scripts must not start daemons: the stack starts and tracks its own
        policy = self.inside("/usr/sbin/policy-rc.d")
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shutil.copyfile("/etc/resolv.conf", self.inside("/etc/resolv.conf"))
        env = self._env({"DEBIAN_FRONTEND": "noninteractive"})
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                        ["apt-get", "clean"]):
            result = subprocess.run(self.chroot(command), capture_output=True, text=True, env=env, timeout=900)
            if result.returncode != 0:
                raise StackError(f"slurm24: {' '.join(command)} in {self.root} failed:\n"
                                 f"{(result.stdout + result.stderr)[-3000:]}")
        self._packages_stamp.write_text(self._packages_wanted)

    def _ensure_users(self) -> None:
        """The job user and slurmrestd's user, with the host's uids: job files cross the bind mount."""
        for name in (JOB_USER, REST_USER):
            host = pwd.getpwnam(name)
            inside = self._user(name)
            if inside == (host.pw_uid, host.pw_gid):
                continue
            if inside is not None:
                raise StackError(f"slurm24: user {name} has ids {inside} in the chroot but "
                                 f"{(host.pw_uid, host.pw_gid)} on the host: ./factory slurm24 purge, then up")
            for kind, number, database in (("group", host.pw_gid, "/etc/group"), ("user", host.pw_uid, "/etc/passwd")):
                for line in self.inside(database).read_text().splitlines():
                    if line.split(":")[2] == str(number):
                        raise StackError(f"slurm24: the chroot's {line.split(':')[0]} already has {kind} id "
                                         f"{number}, which {name} has on the host")
            say(f"user {name} ({host.pw_uid}:{host.pw_gid}) in the chroot")
            self.checked(["groupadd", "-g", str(host.pw_gid), name], f"groupadd {name}")
            self.checked(["useradd", "-u", str(host.pw_uid), "-g", str(host.pw_gid), "-M", "-d", host.pw_dir,
                          "-s", "/bin/bash", name], f"useradd {name}")
            home = self.inside(host.pw_dir)
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, host.pw_uid, host.pw_gid)

    def install(self) -> None:
        self._debootstrap()
        self.mount()
        self._apt_install()
        self._ensure_users()

    def install_only(self) -> None:
        """The root without the cluster: its mounts go again unless the cluster is running."""
        with self._locked():
            self.install()
            if not any(self.supervised(service.name).pid() for service in self.services()):
                self.unmount()

    # ------------------------------------------------------------------ mounts
    def _mounts(self) -> list[tuple[list[str], Path]]:
        """What the chroot needs from the host: kernel file systems, devices, and the jobs folder."""
        jobs = self.paths.jobs
        return [
            (["-t", "proc", "proc"], self.inside("/proc")),
            (["--rbind", "/sys"], self.inside("/sys")),
            (["--rbind", "/dev"], self.inside("/dev")),
            (["--bind", str(jobs)], self.inside(str(jobs))),
        ]

    def mount(self) -> None:
        """Idempotent; rbind mounts are made slaves so an unmount inside never reaches the host's."""
        if not self.paths.jobs.exists():
            self.paths.jobs.mkdir(parents=True)
            job_user = pwd.getpwnam(JOB_USER)
            os.chown(self.paths.jobs, job_user.pw_uid, job_user.pw_gid)
        mounted = set(mount_points())
        for options, target in self._mounts():
            if str(target) in mounted:
                continue
            target.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
            if result.returncode != 0:
                raise StackError(f"slurm24: mount {' '.join(options)} {target}: {result.stderr.strip()}")
            if "--rbind" in options:
                subprocess.run(["mount", "--make-rslave", str(target)], capture_output=True, check=True)

    def unmount(self) -> list[str]:
        """Everything mounted under the chroot, deepest first; the mount points that stay busy."""
        busy = []
        prefix = str(self.root) + "/"
        for point in reversed(mount_points()):
            if not point.startswith(prefix):
                continue
            if subprocess.run(["umount", point], capture_output=True).returncode != 0 and point in mount_points():
                busy.append(point)
        return busy

    # ------------------------------------------------------------------ configuration
    def _secret(self, name: str) -> str:
        values = json.loads(self.secrets_file.read_text()) if self.secrets_file.exists() else {}
        if name not in values:
            values[name] = secrets.token_urlsafe(24)
            self.paths.ensure()
            write_private(self.secrets_file, json.dumps(values, indent=2))
        return values[name]

    def _ensure_dir(self, path: str, owner: str, mode: int = 0o755) -> None:
        folder = self.inside(path)
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, *self._ids(owner))
        folder.chmod(mode)

    def _jwt_key(self) -> Path:
        key = self.inside(JWT_KEY)
        if not key.exists():
            write_private(key, os.urandom(32))
        os.chown(key, *self._ids("slurm"))
        key.chmod(0o600)
        return key

    def token(self, username: str = JOB_USER, lifespan_s: int = TOKEN_LIFESPAN_S) -> str:
        """A JWT this cluster accepts for ``username`` (HS256 with its key: what ``scontrol token`` makes)."""
        now = int(time.time())

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        claims = b64(json.dumps({"iat": now, "exp": now + lifespan_s, "sun": username},
                                separators=(",", ":")).encode())
        signature = hmac.new(self._jwt_key().read_bytes(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
        return f"{header}.{claims}.{b64(signature)}"

    def _node_hardware(self) -> str:
        first = self.checked(["slurmd", "-C"], "slurmd -C").splitlines()[0].split()
        keep = {"CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"}
        return " ".join(item for item in first if item.split("=")[0] in keep)

    def _write_config(self) -> None:
        values = {
            "cluster": CLUSTER, "hostname": short_hostname(), "host": HOST, "node": NODE, "spool": SPOOL,
            "jwt_key": JWT_KEY, "first_job_id": FIRST_JOB_ID, "min_job_age": MIN_JOB_AGE_S,
            "node_hardware": self._node_hardware(), "mariadb_socket": MARIADB_SOCKET,
            "storage_pass": self._secret("mariadb_slurm_password"),
            **{f"{name}_port": port for name, port in PORTS.items()},
        }
        etc = self.inside("/etc/slurm")
        etc.mkdir(parents=True, exist_ok=True)
        for name in PUBLIC_CONFIG:
            (etc / name).write_text((TEMPLATES / name).read_text().format_map(values))
            (etc / name).chmod(0o644)
        dbd = etc / "slurmdbd.conf"
        write_private(dbd, (TEMPLATES / "slurmdbd.conf").read_text().format_map(values))
        os.chown(dbd, *self._ids("slurm"))
        self._jwt_key()
        self._ensure_dir(SPOOL, "slurm")
        self._ensure_dir(f"{SPOOL}/ctld", "slurm", 0o700)
        # 0755 as slurmd makes it at start: job users exec their script from a job folder inside, and
        # ``up`` rewrites this while slurmd runs
        self._ensure_dir(f"{SPOOL}/d", "root", 0o755)
        self._ensure_dir("/var/log/slurm", "slurm")

    def _prepare_munge(self) -> None:
        self._ensure_dir("/run/munge", "munge")
        self._ensure_dir("/var/lib/munge", "munge", 0o700)
        self._ensure_dir("/var/log/munge", "munge", 0o700)
        key = self.inside("/etc/munge/munge.key")
        if not key.exists():
            self.checked(["mungekey", "--create", "--keyfile", "/etc/munge/munge.key"], "mungekey --create")
        os.chown(key, *self._ids("munge"))
        key.chmod(0o400)

    def _prepare_mariadb(self) -> None:
        self._ensure_dir("/run/mysqld", "mysql")
        if not self.inside("/var/lib/mysql/mysql").exists():
            self._ensure_dir("/var/lib/mysql", "mysql", 0o700)
            self.checked(["mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql",
                          "--auth-root-authentication-method=socket", "--skip-test-db"], "mariadb-install-db",
                         timeout_s=180)

    def _bootstrap_mariadb(self) -> None:
        password = self._secret("mariadb_slurm_password").replace("'", "''")
        statements = ["CREATE DATABASE IF NOT EXISTS slurm_acct_db;",
                      f"CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '{password}';",
                      f"ALTER USER 'slurm'@'localhost' IDENTIFIED BY '{password}';",
                      "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"]
        self.checked(["mariadb", f"--socket={MARIADB_SOCKET}", "-u", "root"], "creating the accounting database user",
                     input_text="\n".join(statements))

    def _bootstrap_accounting(self) -> None:
        """Cluster, account and the job user's association: jobs without one are rejected."""
        def exists(entity: str, name: str) -> bool:
            return name in self.run(["sacctmgr", "-nP", "show", entity, name, f"format={entity}"]).stdout.split()

        steps = [
            ("cluster", CLUSTER, ["sacctmgr", "-i", "add", "cluster", CLUSTER]),
            ("account", SLURM_ACCOUNT, ["sacctmgr", "-i", "add", "account", SLURM_ACCOUNT, f"Cluster={CLUSTER}",
                                        "Description=local AI-factory project", "Organization=aifactory"]),
            ("user", JOB_USER, ["sacctmgr", "-i", "add", "user", JOB_USER, f"Account={SLURM_ACCOUNT}",
                                f"DefaultAccount={SLURM_ACCOUNT}", f"Cluster={CLUSTER}"]),
        ]
        for entity, name, command in steps:
            if not exists(entity, name):
                self.checked(command, f"sacctmgr add {entity} {name}")

    # ------------------------------------------------------------------ health
    def _slurmd_health(self) -> str | None:
        return slurm_node_health(self.run, NODE)

    def _rest_health(self) -> str | None:
        headers = {"X-SLURM-USER-NAME": JOB_USER, "X-SLURM-USER-TOKEN": self.token(JOB_USER, 300)}
        return http_check(f"{self.url}/slurm/{PING_VERSION}/ping", headers)

    def _in(self, command: list[str], expect: str | None = None) -> Callable[[], str | None]:
        return lambda: command_check(self.chroot(command), expect)

    # ------------------------------------------------------------------ services
    def services(self) -> list[Service]:
        """In start order; each needs the ones before it."""
        munge = self.chroot(["/usr/sbin/munged", "--foreground", "--force"], "munge" if self.installed else None)
        return [
            Service("munge", munge, health=self._in(["sh", "-c", "munge -n | unmunge"]), prepare=self._prepare_munge,
                    start_timeout_s=15),
            Service("mariadb", self.chroot(["/usr/sbin/mariadbd", "--user=mysql", "--datadir=/var/lib/mysql",
                                            f"--socket={MARIADB_SOCKET}", "--skip-networking",
                                            "--pid-file=/run/mysqld/mariadbd.pid", "--innodb-buffer-pool-size=128M",
                                            "--innodb-lock-wait-timeout=900", "--skip-name-resolve"]),
                    health=self._in(["mariadb-admin", f"--socket={MARIADB_SOCKET}", "ping"], "alive"),
                    prepare=self._prepare_mariadb, bootstrap=self._bootstrap_mariadb, start_timeout_s=60),
            Service("slurmdbd", self.chroot(["/usr/sbin/slurmdbd", "-D"]),
                    health=lambda: port_check(PORTS["slurmdbd"]),
                    bootstrap=self._bootstrap_accounting, start_timeout_s=60),
            Service("slurmctld", self.chroot(["/usr/sbin/slurmctld", "-D", "-i"]),
                    health=self._in(["scontrol", "ping"], "is UP"), start_timeout_s=60),
            Service("slurmd", self.chroot(["/usr/sbin/slurmd", "-D", "-N", NODE]),
                    health=self._slurmd_health, start_timeout_s=60),
            Service("slurmrestd", self.chroot(["/usr/sbin/slurmrestd", "-a", "rest_auth/jwt", "-u", REST_USER,
                                               "-g", REST_USER, f"{HOST}:{PORTS['slurmrestd']}"]),
                    env={"SLURM_JWT": "daemon"}, health=self._rest_health, url=self.url, start_timeout_s=30),
        ]

    def _wait_healthy(self, service: Service, process: Supervised) -> None:
        wait_healthy(service, process, process.log_file, label="slurm24 ")

    # ------------------------------------------------------------------ up / down / status
    def up(self, progress: Callable[[str], None] = say) -> list[Outcome]:
        with self._locked():
            self.paths.ensure()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            self.install()
            if (spent := time.monotonic() - began) > 1:
                progress(f"  {'install':<12} done in {spent:5.1f} s")
            self._restart_on_new_config(progress)
            outcomes = []
            for service in self.services():
                process = self.supervised(service.name)
                if process.pid() is not None and service.health() is None:
                    outcomes.append(Outcome(service.name, 0.0, False))
                    continue
                began = time.monotonic()
                process.stop()  # a stale or unhealthy one
                if service.prepare:
                    service.prepare()
                process.start(service.command, self._env(service.env), cwd=self.paths.state)
                self._wait_healthy(service, process)
                if service.bootstrap:
                    service.bootstrap()
                outcomes.append(Outcome(service.name, time.monotonic() - began, True))
                progress(f"  {service.name:<12} up in {outcomes[-1].seconds:5.1f} s")
            self.write_info_file()
            self._config_stamp.write_text(self._config_hash())
            return outcomes

    @property
    def _config_stamp(self) -> Path:
        return self.run_dir / "config.hash"

    def _config_hash(self) -> str:
        etc = self.inside("/etc/slurm")
        return hashlib.sha256(b"".join((etc / name).read_bytes() for name in CONFIG_FILES)).hexdigest()[:16]

    def _restart_on_new_config(self, progress: Callable[[str], None]) -> None:
        """Running Slurm daemons read their configuration at start: a changed template restarts them."""
        self._write_config()
        if not self._config_stamp.exists() or self._config_stamp.read_text() == self._config_hash():
            return
        for name in ("slurmrestd", "slurmd", "slurmctld", "slurmdbd"):
            if self.supervised(name).stop():
                progress(f"  {name:<12} stopped: its configuration changed")

    def _cancel_jobs(self) -> None:
        if self.supervised("slurmctld").pid() is None:
            return
        self.run(["scancel", "--full", f"--user={JOB_USER}"], timeout_s=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listed = self.run(["squeue", "-h", "-t", "running,completing"], timeout_s=10)
            if listed.returncode != 0 or not listed.stdout.strip():
                return
            time.sleep(0.5)

    def rooted_processes(self) -> list[int]:
        """Processes whose root directory is the chroot: ours, and nothing else on the machine is."""
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry.name}/root") == str(self.root):
                    found.append(int(entry.name))
            except OSError:
                continue
        return [pid for pid in found if process_start_time(pid) is not None]

    def down(self, progress: Callable[[str], None] = say) -> list[int]:
        """Stop everything; the pids that had to be killed because no pid file tracked them."""
        if not self.root.exists():
            return []
        with self._locked():
            self._cancel_jobs()
            for service in reversed(self.services()):
                if self.supervised(service.name).stop():
                    progress(f"  {service.name:<12} stopped")
            stray = self.rooted_processes()
            for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                for pid in self.rooted_processes():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + wait_s
                while self.rooted_processes() and time.monotonic() < deadline:
                    time.sleep(0.1)
            busy = self.unmount()
            if busy:
                raise StackError(f"slurm24: still mounted after down (busy): {', '.join(busy)}")
            return stray

    def purge(self) -> list[int]:
        """Remove the chroot (after ``down``): the next ``up`` is a cold one."""
        stray = self.down()
        prefix = str(self.root) + "/"
        if any(point.startswith(prefix) for point in mount_points()):
            raise StackError(f"slurm24: refusing to remove {self.root}: something is still mounted under it")
        if self.root.exists():
            shutil.rmtree(self.root)
        self.info_file.unlink(missing_ok=True)
        return stray

    def status(self) -> list[dict[str, object]]:
        rows = []
        for service in self.services():
            process = self.supervised(service.name)
            pid = process.pid()
            if pid is None:
                state = "dead" if process.exited_early() else "stopped"
            else:
                state = "healthy" if service.health() is None else "unhealthy"
            rows.append({"service": service.name, "state": state, "pid": pid, "url": service.url,
                         "log": str(process.log_file)})
        return rows

    def release(self) -> str:
        """``24.11.5`` from ``slurm-wlm 24.11.5``."""
        return self.checked(["slurmctld", "-V"], "slurmctld -V").split()[-1]

    def write_info_file(self) -> None:
        """Endpoints and a 30-day token for clients (tests); 0600 beside the host stack's own."""
        info = {
            "cluster": CLUSTER, "release": self.release(), "chroot": str(self.root), "node": NODE,
            "job_user": JOB_USER, "account": SLURM_ACCOUNT, "jobs_dir": str(self.paths.jobs),
            "ports": PORTS, "min_job_age_s": MIN_JOB_AGE_S,
            "slurmrestd": {"url": self.url, "token": self.token(JOB_USER)},
        }
        write_private(self.info_file, json.dumps(info, indent=2))
