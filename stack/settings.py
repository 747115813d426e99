"""Where the local stack lives, which loopback ports it uses, and its per-stack secrets.

Everything the stack writes goes under one state folder (``FACTORY_STATE``, default
``/var/lib/aifactory``), outside the repository. Secrets are generated once per stack and kept in
``<state>/secrets`` (0700 folder, 0600 files); they are passed to services by file or environment,
never on a command line, so they do not show in ``ps`` or in logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HOST = "127.0.0.1"
PORTS = {
    "airflow": 8080,
    "mlflow": 5000,
    "mlserver_http": 8090,
    "mlserver_grpc": 8091,
    "mlserver_metrics": 8092,
    "s3": 8333,
    "seaweed_master": 19333,
    "seaweed_volume": 18080,
    "seaweed_filer": 18888,
    "slurmrestd": 6820,
    "slurmctld": 6817,
    "slurmd": 6818,
    "slurmdbd": 6819,
    "mariadb": 3306,
    "sshd": 2222,  # the login node: OpenSSH for the Slurm SSH transport
    "postgres": 5432,
    "redis": 6379,
    "smtp": 8025,  # the mail sink (aiosmtpd)
    # log servers: the scheduler (LocalExecutor) or each Celery worker serves its task logs, each triggerer its own
    "worker_logs": 8793,
    "triggerer_logs": 8794,
    "celery_worker_1_logs": 8795,
    "celery_worker_2_logs": 8796,
    "triggerer_2_logs": 8797,
}
BUCKETS = ("datasets", "mlflow-artifacts", "reports", "job-staging")
CLUSTER = "localfactory"
NODE = "localnode"
JOB_USER = os.environ.get("FACTORY_JOB_USER", "hpcuser")
SLURM_ACCOUNT = "demo"
REST_USER = "slurmrest"
MLFLOW_USER = "factory"  # the non-admin MLflow user that pipelines and jobs log as
SLURM_ETC = Path("/etc/slurm")

TOKEN_LIFESPAN_S = 30 * 86400

# How Airflow runs: ``./factory stack up --profile NAME`` chooses, and the choice stays with the state folder.
PROFILES = {
    "local": "one machine: LocalExecutor, one triggerer; Airflow and MLflow on PostgreSQL",
    "production": "CeleryExecutor with Redis and two Celery workers, two triggerers; Airflow and MLflow on "
                  "PostgreSQL",
}
DEFAULT_PROFILE = "local"


def token_expiry(token: str) -> int:
    claims = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"])


@dataclass(frozen=True)
class StackPaths:
    state: Path

    @classmethod
    def from_env(cls) -> StackPaths:
        return cls(Path(os.environ.get("FACTORY_STATE", "/var/lib/aifactory")))

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def secrets(self) -> Path:
        return self.state / "secrets"

    @property
    def data(self) -> Path:
        return self.state / "data"

    def venv(self, name: str) -> Path:
        return self.state / "venvs" / name

    def bin(self, venv: str, program: str) -> str:
        return str(self.venv(venv) / "bin" / program)

    @property
    def jobs(self) -> Path:
        """Working folders of Slurm jobs, owned by the unprivileged job user."""
        return self.state / "jobs"

    @property
    def model_repository(self) -> Path:
        return self.data / "model-repository"

    @property
    def ssh(self) -> Path:
        """The login node's sshd: host keys, config, authorized keys, known_hosts (no secrets)."""
        return self.state / "ssh"

    @property
    def ssh_key(self) -> Path:
        """The job user's private SSH key; root-owned 0600 because Airflow (root) logs in with it."""
        return self.secrets / "ssh" / "id_ed25519"

    @property
    def ssh_known_hosts(self) -> Path:
        """The login node's host key, so clients can insist on StrictHostKeyChecking=yes."""
        return self.ssh / "known_hosts"

    @property
    def profile_file(self) -> Path:
        return self.state / "profile"

    def profile(self) -> str:
        """The profile chosen at the last ``up --profile`` (``local`` until one is chosen)."""
        try:
            chosen = self.profile_file.read_text().strip()
        except FileNotFoundError:
            return DEFAULT_PROFILE
        return chosen if chosen in PROFILES else DEFAULT_PROFILE

    def choose_profile(self, name: str) -> None:
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
        self.ensure()
        self.profile_file.write_text(name + "\n")

    @property
    def info_file(self) -> Path:
        """Endpoints and credentials for clients of the stack (tests, demo); 0600."""
        return self.secrets / "stack.json"

    def ensure(self) -> None:
        for folder in (self.state, self.run, self.logs, self.data):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        self.secrets.mkdir(parents=True, exist_ok=True)
        self.secrets.chmod(0o700)


def _token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


SECRET_NAMES = {
    "s3_access_key": lambda: "AKF" + secrets.token_hex(8).upper(),
    "s3_secret_key": lambda: _token(30),
    "mlflow_admin_password": _token,
    "mlflow_user_password": _token,
    "mlflow_flask_secret": _token,
    "mariadb_slurm_password": _token,
    "postgres_password": _token,
    "redis_password": _token,
    "airflow_admin_password": _token,
    "airflow_jwt_secret": _token,
    "airflow_api_secret_key": _token,
    "airflow_fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
}


def write_private(path: Path, content: str | bytes) -> None:
    """Write a file that only its owner may read, without a moment of wider permissions."""
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


class StackSecrets:
    """Secrets generated on first use and reused by every later ``up`` of the same stack."""

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.file = paths.secrets / "secrets.json"

    @cached_property
    def values(self) -> dict[str, str]:
        self.paths.ensure()
        values: dict[str, str] = json.loads(self.file.read_text()) if self.file.exists() else {}
        missing = {name: make() for name, make in SECRET_NAMES.items() if name not in values}
        if missing:
            values.update(missing)
            write_private(self.file, json.dumps(values, indent=2))
        return values

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def generated(self, name: str, make) -> str:
        """A secret outside ``SECRET_NAMES`` (one per pipeline), made on first use and kept like the others."""
        if name not in self.values:
            self.values[name] = make()
            write_private(self.file, json.dumps(self.values, indent=2))
        return self.values[name]

    @property
    def slurm_jwt_key_file(self) -> Path:
        return self.paths.state / "slurm-auth" / "jwt_hs256.key"  # SlurmUser must reach it

    def ensure_slurm_jwt_key(self, slurm_uid: int, slurm_gid: int) -> Path:
        """The HS256 key slurmctld and slurmdbd share; readable by SlurmUser only."""
        key = self.slurm_jwt_key_file
        key.parent.mkdir(parents=True, exist_ok=True)
        os.chown(key.parent, slurm_uid, slurm_gid)
        key.parent.chmod(0o700)
        if not key.exists():
            write_private(key, os.urandom(32))
        os.chown(key, slurm_uid, slurm_gid)
        return key

    def stable_slurm_token(self, username: str) -> str:
        """The stack's stored token for ``username``, renewed when less than half its life is left."""
        tokens_file = self.paths.secrets / "slurm-tokens.json"
        tokens = json.loads(tokens_file.read_text()) if tokens_file.exists() else {}
        token = tokens.get(username)
        if token is None or token_expiry(token) - time.time() < TOKEN_LIFESPAN_S / 2:
            tokens[username] = token = self.slurm_token(username)
            write_private(tokens_file, json.dumps(tokens))
        return token

    def slurm_token(self, username: str, lifespan_s: int = TOKEN_LIFESPAN_S) -> str:
        """A Slurm JWT for ``username`` signed with the stack's key (what ``scontrol token`` makes)."""
        return hs256_token(self.slurm_jwt_key_file.read_bytes(), username, lifespan_s)


def hs256_token(key: bytes, username: str, lifespan_s: int = TOKEN_LIFESPAN_S) -> str:
    """A Slurm JWT for ``username`` signed with ``key``: what ``scontrol token`` makes, without a daemon."""
    now = int(time.time())
    claims = {"iat": now, "exp": now + lifespan_s, "sun": username}
    header = {"alg": "HS256", "typ": "JWT"}

    def b64(obj: dict) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{b64(header)}.{b64(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def short_hostname() -> str:
    return socket.gethostname().split(".")[0]
