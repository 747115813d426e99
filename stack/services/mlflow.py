"""MLflow: the tracking server and model registry, with basic auth and its artifacts in S3."""

from __future__ import annotations

from pathlib import Path

from operators.http_json import JsonClient
from stack.job_access import ensure_mlflow_user
from stack.services.common import Service, basic_auth, ensure_dir, http_check
from stack.services.postgres import PostgreSQL
from stack.services.seaweedfs import S3_URL
from stack.settings import HOST, MLFLOW_USER, PORTS, StackPaths, StackSecrets, write_private

MLFLOW_URL = f"http://{HOST}:{PORTS['mlflow']}"


class MLflow:
    def __init__(self, paths: StackPaths, secrets: StackSecrets, postgres: PostgreSQL) -> None:
        self.paths = paths
        self.secrets = secrets
        self.postgres = postgres

    @property
    def auth_config(self) -> Path:
        return self.paths.secrets / "mlflow-basic-auth.ini"

    def admin_headers(self) -> dict[str, str]:
        return basic_auth("admin", self.secrets["mlflow_admin_password"])

    def prepare(self) -> None:
        folder = ensure_dir(self.paths.data / "mlflow", mode=0o700)
        write_private(self.auth_config, "\n".join([
            "[mlflow]",
            "default_permission = NO_PERMISSIONS",  # a job's user sees only what start_run grants it
            "auth_cache_ttl_seconds = 60",  # a password hash per credential per minute, not per request
            f"database_uri = sqlite:///{folder}/basic_auth.db",
            "admin_username = admin",
            f"admin_password = {self.secrets['mlflow_admin_password']}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ]))

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.secrets["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": S3_URL,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.auth_config),
            # runs, metrics and the registry in PostgreSQL (concurrent pipelines write at once); by environment,
            # since the URI holds the password
            "MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow", "postgresql"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["mlflow_flask_secret"],
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def bootstrap_user(self) -> None:
        """The orchestrator's MLflow user, with the stack's generated password: the platform's service
        account (admin: it creates every pipeline's experiment and grants the pipeline's job user on it)."""
        base = f"{MLFLOW_URL}/api/2.0/mlflow/users"
        admin = self.admin_headers()
        ensure_mlflow_user(base, admin, {"username": MLFLOW_USER, "password": self.secrets["mlflow_user_password"]})
        JsonClient(base, RuntimeError, admin, timeout_s=10).call("PATCH", "/update-admin",
                                                                 {"username": MLFLOW_USER, "is_admin": True})

    def service(self) -> Service:
        mlflow = self.paths.bin("orchestrator", "mlflow")
        return Service("mlflow", [mlflow, "server", "--app-name", "basic-auth",
                                  "--artifacts-destination", "s3://mlflow-artifacts/",
                                  "--host", HOST, "--port", str(PORTS["mlflow"]), "--workers", "1"],
                       needs=("seaweedfs", "postgres"), env=self.env(), prepare=self.prepare,
                       health=lambda: http_check(f"{MLFLOW_URL}/health"),
                       bootstrap=self.bootstrap_user, url=MLFLOW_URL, start_timeout_s=90, ports=(PORTS["mlflow"],))
