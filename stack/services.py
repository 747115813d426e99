"""The services of the local AI-factory stack: how each starts, when it is healthy, what it needs.

Each is a real daemon from Debian's packages or from the stack's Python environments, bound to
127.0.0.1. ``prepare`` writes configuration and initialises data before a start; ``bootstrap``
runs once the service is healthy (accounts, buckets, users), and is idempotent.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stack.job_access import JobAccess
from stack.settings import (
    BUCKETS,
    CLUSTER,
    HOST,
    JOB_USER,
    MLFLOW_USER,
    NODE,
    PORTS,
    REPO,
    REST_USER,
    SLURM_ACCOUNT,
    SLURM_ETC,
    StackPaths,
    StackSecrets,
    short_hostname,
    write_private,
)

Check = Callable[[], "str | None"]  # None when healthy, else why not


@dataclass
class Service:
    name: str
    command: list[str]
    health: Check
    needs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    prepare: Callable[[], None] | None = None
    bootstrap: Callable[[], None] | None = None
    start_timeout_s: float = 60.0
    oneshot: bool = False  # runs to completion before its dependents start
    is_current: Callable[[], bool] = lambda: True  # a one-shot whose inputs changed runs again
    url: str | None = None


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


def run(command: list[str], *, input_text: str | None = None, timeout_s: float = 30.0,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=input_text, capture_output=True, text=True,
                          timeout=timeout_s, env=env)


def command_check(command: list[str], expect: str | None = None) -> str | None:
    try:
        result = run(command, timeout_s=10)
    except subprocess.TimeoutExpired:
        return f"{command[0]} timed out"
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        return output.splitlines()[-1] if output else f"{command[0]} exited {result.returncode}"
    if expect and expect not in output:
        return output[-200:]
    return None


def port_check(port: int) -> str | None:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return None
    except OSError as error:
        return f"port {port}: {error.strerror or error}"


def http_get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 3.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_check(url: str, headers: dict[str, str] | None = None) -> str | None:
    try:
        status, body = http_get(url, headers)
    except (OSError, urllib.error.URLError) as error:
        return f"{url}: {getattr(error, 'reason', error)}"
    return None if status == 200 else f"{url}: HTTP {status} {body[:200]!r}"


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def ensure_dir(path: Path, owner: str | None = None, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if owner:
        user = pwd.getpwnam(owner)
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)
    return path


class LocalFactory:
    """Builds the service list for one stack state folder."""

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.secrets = StackSecrets(paths)
        self.job_access = JobAccess(self.secrets)
        self.hostname = short_hostname()

    def prepare_common(self) -> None:
        """What several services share: the state folders and the Slurm JWT key."""
        self.paths.ensure()
        slurm = pwd.getpwnam("slurm")
        self.secrets.ensure_slurm_jwt_key(slurm.pw_uid, slurm.pw_gid)
        write_private(self._connections_file(), json.dumps(self._connections(), sort_keys=True))

    # ---------------------------------------------------------------- Slurm
    def _slurm_values(self) -> dict[str, object]:
        slurm = pwd.getpwnam("slurm")
        jwt_key = self.secrets.ensure_slurm_jwt_key(slurm.pw_uid, slurm.pw_gid)
        hardware = run(["slurmd", "-C"]).stdout.splitlines()[0].split()
        node_hardware = " ".join(item for item in hardware
                                 if item.split("=")[0] in {"CPUs", "Boards", "SocketsPerBoard",
                                                           "CoresPerSocket", "ThreadsPerCore",
                                                           "RealMemory"})
        return {
            "cluster": CLUSTER, "hostname": self.hostname, "host": HOST, "node": NODE,
            "state": self.paths.state, "jwt_key": jwt_key, "node_hardware": node_hardware,
            "storage_pass": self.secrets["mariadb_slurm_password"],
            **{f"{name}_port": port for name, port in PORTS.items()},
        }

    def _write_slurm_config(self) -> None:
        values = self._slurm_values()
        templates = REPO / "stack" / "templates"
        ensure_dir(SLURM_ETC)
        # slurmd, slurmctld and slurmdbd each prepare this while slurmrestd may be starting and reading it:
        # a file is replaced in one rename, never seen empty, and only when its content changes
        slurm = pwd.getpwnam("slurm")
        for name in ("slurm.conf", "cgroup.conf", "gres.conf", "slurmdbd.conf"):
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

    def _prepare_munge(self) -> None:
        for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
            ensure_dir(folder, "munge", 0o755 if folder.name == "munge" and "run" in str(folder) else 0o700)
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            run(["mungekey", "--create", "--keyfile", str(key)])
        munge = pwd.getpwnam("munge")
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)

    def _mariadb_dir(self) -> Path:
        return self.paths.data / "mariadb"

    def _mariadb_socket(self) -> str:
        return str(self.paths.run / "mariadb" / "mariadb.sock")

    def _prepare_mariadb(self) -> None:
        datadir = self._mariadb_dir()
        ensure_dir(self.paths.run / "mariadb", "mysql")
        if not (datadir / "mysql").exists():
            ensure_dir(datadir, "mysql", 0o700)
            result = run(["mariadb-install-db", "--user=mysql", f"--datadir={datadir}",
                          "--auth-root-authentication-method=socket", "--skip-test-db"], timeout_s=120)
            if result.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")

    def _bootstrap_mariadb(self) -> None:
        password = self.secrets["mariadb_slurm_password"].replace("'", "''")
        statements = ["CREATE DATABASE IF NOT EXISTS slurm_acct_db;"]
        for host in ("127.0.0.1", "localhost"):
            statements += [
                f"CREATE USER IF NOT EXISTS 'slurm'@'{host}' IDENTIFIED BY '{password}';",
                f"ALTER USER 'slurm'@'{host}' IDENTIFIED BY '{password}';",
                f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{host}';",
            ]
        result = run(["mariadb", f"--socket={self._mariadb_socket()}", "-u", "root"],
                     input_text="\n".join(statements))
        if result.returncode != 0:
            raise RuntimeError(f"creating the accounting database user failed: {result.stderr}")

    def _bootstrap_accounting(self) -> None:
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

    def _slurm_rest_headers(self) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": JOB_USER, "X-SLURM-USER-TOKEN": self.secrets.slurm_token(JOB_USER, 300)}

    # ---------------------------------------------------------------- S3
    def _s3_config_file(self) -> Path:
        return self.paths.secrets / "seaweedfs-s3.json"

    def _s3_admin_identity(self) -> dict:
        """The orchestrator's own S3 identity (tasks, the stack); Slurm jobs get their pipeline's (job_access)."""
        return {"name": "factory", "credentials": [{"accessKey": self.secrets["s3_access_key"],
                                                    "secretKey": self.secrets["s3_secret_key"]}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}

    def _prepare_seaweedfs(self) -> None:
        ensure_dir(self.paths.data / "seaweedfs", mode=0o700)
        self.job_access.apply_s3(self._s3_config_file(), None, self._s3_admin_identity())

    def _apply_job_access(self) -> None:
        """Every pipeline's job identities, also on a stack that is already up: SeaweedFS rereads its
        identities on SIGHUP, MLflow users are created or their passwords set again."""
        from stack.process import Supervised

        pid = Supervised("seaweedfs", self.paths.run, self.paths.logs).pid()
        self.job_access.apply_s3(self._s3_config_file(), pid, self._s3_admin_identity())
        self.job_access.ensure_mlflow_users(basic_auth("admin", self.secrets["mlflow_admin_password"]))
        write_private(self._job_access_marker(), self.job_access.fingerprint())

    def _job_access_marker(self) -> Path:
        return self.paths.state / "job-access.applied"

    def _job_access_current(self) -> bool:
        """Applied already (the same identities and passwords): a second ``up`` starts nothing."""
        marker = self._job_access_marker()
        return marker.exists() and marker.read_text() == self.job_access.fingerprint()

    def s3_client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=f"http://{HOST}:{PORTS['s3']}", region_name="us-east-1",
            aws_access_key_id=self.secrets["s3_access_key"],
            aws_secret_access_key=self.secrets["s3_secret_key"],
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def _s3_health(self) -> str | None:
        try:
            self.s3_client().list_buckets()
        except Exception as error:
            return f"S3 list_buckets: {error}"
        return None

    def _bootstrap_buckets(self) -> None:
        client = self.s3_client()
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        for bucket in BUCKETS:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    def _registry_current(self) -> bool:
        from stack.datasets import REGISTRY_NAME, registry_is_complete

        return registry_is_complete(self.paths.data / REGISTRY_NAME)

    def _bootstrap_dataset_registry(self) -> None:
        from stack.datasets import ensure_dataset_registry

        ensure_dataset_registry(self.paths, f"http://{HOST}:{PORTS['s3']}", self.secrets["s3_access_key"],
                                self.secrets["s3_secret_key"])

    # ---------------------------------------------------------------- login node (OpenSSH)
    def _sshd_host_key(self) -> Path:
        return self.paths.ssh / "ssh_host_ed25519_key"

    def _sshd_config_file(self) -> Path:
        return self.paths.ssh / "sshd_config"

    def _authorized_keys_dir(self) -> Path:
        return self.paths.ssh / "authorized_keys"

    def sshd_config(self) -> str:
        """Key-only login for the job user on loopback, with room for many multiplexed sessions.

        A ControlMaster connection shared by many Airflow tasks opens one session per command, so
        MaxSessions is well above sshd's default of 10. ``PidFile none``: the stack's own pid file
        tracks sshd. UsePAM is off (no systemd or PAM session setup here), so the job user's
        password field must not start with ``!`` (install.sh sets it to ``*``).
        """
        return "\n".join([
            f"ListenAddress {HOST}",
            f"Port {PORTS['sshd']}",
            f"HostKey {self._sshd_host_key()}",
            "PidFile none",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitEmptyPasswords no",
            "HostbasedAuthentication no",
            "GSSAPIAuthentication no",
            "KerberosAuthentication no",
            "PermitRootLogin no",
            f"AllowUsers {JOB_USER}",
            f"AuthorizedKeysFile {self._authorized_keys_dir()}/%u",
            "StrictModes yes",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LoginGraceTime 30",
            "ClientAliveInterval 30",
            "ClientAliveCountMax 4",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "PermitUserEnvironment no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "AllowStreamLocalForwarding no",
            "PermitTunnel no",
            "Subsystem sftp internal-sftp",
            "",
        ])

    def _write_login_node_files(self) -> None:
        """Keys once; config, authorized_keys and known_hosts on every start (derived from the keys).

        StrictModes checks the authorized_keys file and every folder above it: all root-owned and
        not group- or world-writable, so the state folder must not sit under a folder like /tmp.
        """
        ensure_dir(self.paths.ssh, "root")
        ensure_dir(self.paths.ssh_key.parent, "root", 0o700)
        host_key, client_key = self._sshd_host_key(), self.paths.ssh_key
        for key, comment in ((host_key, f"sshd@{CLUSTER}"), (client_key, f"{JOB_USER}@{CLUSTER}")):
            public = Path(f"{key}.pub")
            if key.exists() and public.exists():
                continue
            key.unlink(missing_ok=True)  # half a key pair: ssh-keygen would ask before overwriting
            public.unlink(missing_ok=True)
            result = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
            if result.returncode != 0:
                raise RuntimeError(f"ssh-keygen for {key}: {result.stderr}")
        Path(f"{client_key}.pub").chmod(0o600)  # everything under secrets/ is owner-only
        authorized = ensure_dir(self._authorized_keys_dir(), "root") / JOB_USER
        authorized.write_text(Path(f"{client_key}.pub").read_text())
        authorized.chmod(0o644)
        key_type, key_text = Path(f"{host_key}.pub").read_text().split()[:2]
        self.paths.ssh_known_hosts.write_text(f"[{HOST}]:{PORTS['sshd']} {key_type} {key_text}\n")
        self.paths.ssh_known_hosts.chmod(0o644)
        self._sshd_config_file().write_text(self.sshd_config())

    def _prepare_sshd(self) -> None:
        ensure_dir(Path("/run/sshd"), "root")  # sshd's privilege-separation folder; /run is emptied at boot
        self._write_login_node_files()

    def _sshd_health(self) -> str | None:
        """Healthy only when the job user really logs in with the stack's key and known_hosts.

        No separate port probe: a bare TCP connect shows up in sshd's log as a failed key exchange,
        and ssh's own error already names the port when nothing listens.
        """
        return command_check([
            "ssh", "-F", "/dev/null", "-p", str(PORTS["sshd"]), "-i", str(self.paths.ssh_key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.paths.ssh_known_hosts}", "-o", "ConnectTimeout=5",
            f"{JOB_USER}@{HOST}", "true"])

    # ---------------------------------------------------------------- MLflow
    def _mlflow_auth_config(self) -> Path:
        return self.paths.secrets / "mlflow-basic-auth.ini"

    def _prepare_mlflow(self) -> None:
        folder = ensure_dir(self.paths.data / "mlflow", mode=0o700)
        write_private(self._mlflow_auth_config(), "\n".join([
            "[mlflow]",
            "default_permission = NO_PERMISSIONS",  # a job's user sees only what start_run grants it
            "auth_cache_ttl_seconds = 60",  # a password hash per credential per minute, not per request
            f"database_uri = sqlite:///{folder}/basic_auth.db",
            "admin_username = admin",
            f"admin_password = {self.secrets['mlflow_admin_password']}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ]))

    def _mlflow_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.secrets["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": f"http://{HOST}:{PORTS['s3']}",
            "MLFLOW_AUTH_CONFIG_PATH": str(self._mlflow_auth_config()),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["mlflow_flask_secret"],
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def _bootstrap_mlflow_user(self) -> None:
        """The orchestrator's MLflow user, with the stack's generated password: the platform's service
        account (admin: it creates every pipeline's experiment and grants the pipeline's job user on it)."""
        from stack.job_access import ensure_mlflow_user

        base = f"http://{HOST}:{PORTS['mlflow']}/api/2.0/mlflow/users"
        admin = basic_auth("admin", self.secrets["mlflow_admin_password"])
        ensure_mlflow_user(base, admin, {"username": MLFLOW_USER, "password": self.secrets["mlflow_user_password"]})
        body = json.dumps({"username": MLFLOW_USER, "is_admin": True}).encode()
        request = urllib.request.Request(f"{base}/update-admin", data=body, method="PATCH",
                                         headers={**admin, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"MLflow user {MLFLOW_USER}: admin flag: HTTP {response.status}")

    # ---------------------------------------------------------------- MLServer
    def _prepare_mlserver(self) -> None:
        repository = ensure_dir(self.paths.model_repository)
        (repository / "settings.json").write_text(json.dumps({
            "host": HOST,
            "http_port": PORTS["mlserver_http"],
            "grpc_port": PORTS["mlserver_grpc"],
            "metrics_port": PORTS["mlserver_metrics"],
            "parallel_workers": 0,
            "load_models_at_startup": True,
        }, indent=2))

    # ---------------------------------------------------------------- Airflow
    def airflow_env(self) -> dict[str, str]:
        home = self.paths.state / "airflow"
        return {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            # SQLite unless the caller chose another database (PostgreSQL: see the README). A writer waits
            # up to 30 s for another's lock instead of sqlite3's 5 s: the dag-processor's first parse of
            # every DAG on a 2-core machine holds it longer.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                                                                  f"sqlite:///{home}/airflow.db?timeout=30"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._airflow_passwords_file()),
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["airflow_fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["airflow_jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": self.secrets["airflow_api_secret_key"],
            "FACTORY_STATE": str(self.paths.state),
        }

    def _airflow_passwords_file(self) -> Path:
        return self.paths.secrets / "airflow-passwords.json"

    def _slurm_site(self) -> dict[str, str]:
        """What every Slurm connection of the stack shares, whichever transport reaches the cluster."""
        return {"cluster": CLUSTER, "account": SLURM_ACCOUNT, "job_workdir": str(self.paths.jobs),
                "job_runtime": str(self.paths.venv("job-runtime"))}

    def _connections(self) -> dict[str, dict]:
        """What Airflow tasks use to reach the stack; imported as Airflow connections.

        The one cluster is reachable three ways (slurmrestd, the Slurm commands on this host, and
        the login node over SSH), so each transport can be tested against the same jobs.
        """
        slurm_site = self._slurm_site()
        return {
            "factory_s3": {
                "conn_type": "aws", "login": self.secrets["s3_access_key"],
                "password": self.secrets["s3_secret_key"],
                "extra": {"endpoint_url": f"http://{HOST}:{PORTS['s3']}", "region_name": "us-east-1"},
            },
            "factory_mlflow": {
                "conn_type": "http", "host": HOST, "port": PORTS["mlflow"], "schema": "http",
                "login": MLFLOW_USER, "password": self.secrets["mlflow_user_password"],
            },
            "factory_slurm_local": {
                "conn_type": "slurm", "host": HOST, "port": PORTS["slurmrestd"], "schema": "http",
                "login": JOB_USER, "password": self.secrets.stable_slurm_token(JOB_USER),
                "extra": {"transport": "rest", "api_version": "auto", **slurm_site},
            },
            "factory_slurm_cli": {
                "conn_type": "slurm", "login": JOB_USER,
                "extra": {"transport": "local", **slurm_site},
            },
            "factory_slurm_ssh": {
                "conn_type": "slurm", "host": HOST, "port": PORTS["sshd"], "login": JOB_USER,
                "extra": {"transport": "ssh", "key_file": str(self.paths.ssh_key),
                          "known_hosts": str(self.paths.ssh_known_hosts), **slurm_site},
            },
            "factory_inference": {
                "conn_type": "http", "host": HOST, "port": PORTS["mlserver_http"], "schema": "http",
                "extra": {"model_repository": str(self.paths.model_repository)},
            },
            **self.job_access.connections(),
        }

    def _connections_file(self) -> Path:
        return self.paths.secrets / "airflow-connections.json"

    def _imported_marker(self) -> Path:
        return self.paths.state / "airflow" / ".connections-imported"

    def _connections_current(self) -> bool:
        marker = self._imported_marker()
        return marker.exists() and marker.read_text() == self._connections_file().read_text()

    def _mark_connections_imported(self) -> None:
        write_private(self._imported_marker(), self._connections_file().read_text())

    def _prepare_airflow(self) -> None:
        ensure_dir(self.paths.state / "airflow", mode=0o700)
        write_private(self._airflow_passwords_file(),
                      json.dumps({"admin": self.secrets["airflow_admin_password"]}))

    def write_info_file(self) -> None:
        """Endpoints and credentials for clients of the stack: tests, the demo, the README's hints."""
        info = {
            "state": str(self.paths.state),
            "cluster": CLUSTER, "node": NODE, "job_user": JOB_USER, "account": SLURM_ACCOUNT,
            "jobs_dir": str(self.paths.jobs),
            "model_repository": str(self.paths.model_repository),
            "venvs": {name: str(self.paths.venv(name))
                      for name in ("orchestrator", "job-runtime", "serving", "torch-runtime")},
            "s3": {"endpoint_url": f"http://{HOST}:{PORTS['s3']}", "access_key": self.secrets["s3_access_key"],
                   "secret_key": self.secrets["s3_secret_key"], "buckets": list(BUCKETS)},
            "mlflow": {"url": f"http://{HOST}:{PORTS['mlflow']}", "username": MLFLOW_USER,
                       "password": self.secrets["mlflow_user_password"],
                       "admin_password": self.secrets["mlflow_admin_password"]},
            "slurmrestd": {"url": f"http://{HOST}:{PORTS['slurmrestd']}", "user": JOB_USER,
                           "token": self.secrets.stable_slurm_token(JOB_USER)},
            "mlserver": {"url": f"http://{HOST}:{PORTS['mlserver_http']}"},
            "ssh": {"host": HOST, "port": PORTS["sshd"], "user": JOB_USER, "key_file": str(self.paths.ssh_key),
                    "known_hosts": str(self.paths.ssh_known_hosts)},
            "airflow": {"url": f"http://{HOST}:{PORTS['airflow']}", "username": "admin",
                        "password": self.secrets["airflow_admin_password"]},
        }
        write_private(self.paths.info_file, json.dumps(info, indent=2))

    def _airflow_component_check(self, component: str) -> Check:
        def check() -> str | None:
            try:
                status, body = http_get(f"http://{HOST}:{PORTS['airflow']}/api/v2/monitor/health")
            except OSError as error:
                return f"API server not answering: {error}"
            if status != 200:
                return f"health endpoint: HTTP {status}"
            state = json.loads(body).get(component) or {}
            return None if state.get("status") == "healthy" else f"{component}: {state}"
        return check

    # ---------------------------------------------------------------- the list
    def services(self) -> list[Service]:
        orchestrator = self.paths.venv("orchestrator")
        airflow = str(orchestrator / "bin" / "airflow")
        airflow_env = self.airflow_env()
        weed = str(self.paths.state / "tools" / "bin" / "weed")
        mariadb_dir = self._mariadb_dir()
        airflow_url = f"http://{HOST}:{PORTS['airflow']}"
        return [
            Service("munge", ["/usr/sbin/munged", "--foreground", "--force"],
                    health=lambda: command_check(["sh", "-c", "munge -n | unmunge"]),
                    user="munge", prepare=self._prepare_munge, start_timeout_s=15),
            Service("mariadb", ["/usr/sbin/mariadbd", "--user=mysql", f"--datadir={mariadb_dir}",
                                f"--socket={self._mariadb_socket()}", f"--bind-address={HOST}",
                                f"--port={PORTS['mariadb']}", f"--pid-file={self.paths.run}/mariadb/mariadbd.pid",
                                "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900",
                                "--skip-name-resolve"],
                    health=lambda: command_check(["mariadb-admin", f"--socket={self._mariadb_socket()}",
                                                  "ping"], "alive"),
                    prepare=self._prepare_mariadb, bootstrap=self._bootstrap_mariadb, start_timeout_s=60),
            Service("slurmdbd", ["/usr/sbin/slurmdbd", "-D"], needs=("munge", "mariadb"),
                    health=lambda: port_check(PORTS["slurmdbd"]),
                    prepare=self._write_slurm_config, bootstrap=self._bootstrap_accounting,
                    start_timeout_s=60),
            Service("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"], needs=("slurmdbd",),
                    health=lambda: command_check(["scontrol", "ping"], "is UP"),
                    prepare=self._write_slurm_config, start_timeout_s=60),
            Service("slurmd", ["/usr/sbin/slurmd", "-D", "-N", NODE], needs=("slurmctld",),
                    health=self._slurmd_health, prepare=self._write_slurm_config, start_timeout_s=60),
            Service("slurmrestd", ["/usr/sbin/slurmrestd", "-a", "rest_auth/jwt", "-u", REST_USER,
                                   "-g", REST_USER, f"{HOST}:{PORTS['slurmrestd']}"],
                    needs=("slurmctld",), env={"SLURM_JWT": "daemon"},
                    health=lambda: http_check(f"http://{HOST}:{PORTS['slurmrestd']}/slurm/v0.0.38/ping",
                                              self._slurm_rest_headers()),
                    url=f"http://{HOST}:{PORTS['slurmrestd']}", start_timeout_s=30),
            # the login node; sshd re-executes itself, so it must be started by its absolute path
            Service("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(self._sshd_config_file())],
                    health=self._sshd_health, prepare=self._prepare_sshd,
                    url=f"ssh://{JOB_USER}@{HOST}:{PORTS['sshd']}", start_timeout_s=20),
            Service("seaweedfs", [weed, "-logtostderr", "server", f"-dir={self.paths.data}/seaweedfs",
                                  f"-ip={HOST}", f"-ip.bind={HOST}",
                                  f"-master.port={PORTS['seaweed_master']}",
                                  f"-volume.port={PORTS['seaweed_volume']}",
                                  f"-filer.port={PORTS['seaweed_filer']}", "-volume.max=64",
                                  "-master.volumeSizeLimitMB=1024", "-master.electionTimeout=1s",
                                  "-master.telemetry=false", "-filer.disableHttp",
                                  "-s3", f"-s3.port={PORTS['s3']}", f"-s3.config={self._s3_config_file()}",
                                  "-s3.port.iceberg=0"],
                    health=self._s3_health, prepare=self._prepare_seaweedfs,
                    bootstrap=self._bootstrap_buckets, url=f"http://{HOST}:{PORTS['s3']}",
                    start_timeout_s=60),
            Service("dataset-registry", [], needs=("seaweedfs",), health=lambda: None, oneshot=True,
                    is_current=self._registry_current, bootstrap=self._bootstrap_dataset_registry,
                    start_timeout_s=120),
            Service("mlflow", [str(orchestrator / "bin" / "mlflow"), "server", "--app-name", "basic-auth",
                               "--backend-store-uri", f"sqlite:///{self.paths.data}/mlflow/mlflow.db",
                               "--artifacts-destination", "s3://mlflow-artifacts/",
                               "--host", HOST, "--port", str(PORTS["mlflow"]), "--workers", "1"],
                    needs=("seaweedfs",), env=self._mlflow_env(), prepare=self._prepare_mlflow,
                    health=lambda: http_check(f"http://{HOST}:{PORTS['mlflow']}/health"),
                    bootstrap=self._bootstrap_mlflow_user, url=f"http://{HOST}:{PORTS['mlflow']}",
                    start_timeout_s=90),
            Service("job-access", [], needs=("seaweedfs", "mlflow"), health=lambda: None, oneshot=True,
                    is_current=self._job_access_current, bootstrap=self._apply_job_access, start_timeout_s=60),
            Service("mlserver", [self.paths.bin("serving", "mlserver"), "start",
                                 str(self.paths.model_repository)],
                    prepare=self._prepare_mlserver,
                    health=lambda: http_check(f"http://{HOST}:{PORTS['mlserver_http']}/v2/health/ready"),
                    url=f"http://{HOST}:{PORTS['mlserver_http']}", start_timeout_s=90),
            Service("airflow-db", ["sh", "-c", f'"{airflow}" db migrate && "{airflow}" connections import '
                                   f'--overwrite "{self._connections_file()}"'],
                    env=airflow_env, prepare=self._prepare_airflow, health=lambda: None, oneshot=True,
                    is_current=self._connections_current, bootstrap=self._mark_connections_imported,
                    start_timeout_s=180),
            Service("airflow-api", [airflow, "api-server"], needs=("airflow-db",), env=airflow_env,
                    health=lambda: http_check(f"{airflow_url}/api/v2/monitor/health"),
                    url=airflow_url, start_timeout_s=120),
            Service("airflow-scheduler", [airflow, "scheduler"], needs=("airflow-db",), env=airflow_env,
                    health=self._airflow_component_check("scheduler"), start_timeout_s=120),
            Service("airflow-dag-processor", [airflow, "dag-processor"], needs=("airflow-db",),
                    env=airflow_env, health=self._airflow_component_check("dag_processor"),
                    start_timeout_s=120),
            Service("airflow-triggerer", [airflow, "triggerer"], needs=("airflow-db",), env=airflow_env,
                    health=self._airflow_component_check("triggerer"), start_timeout_s=120),
        ]

