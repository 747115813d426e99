"""Airflow: its database and the connections it imports, the API server, scheduler, dag-processor and triggerer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from operators.slurm.edge import EDGE_EXECUTOR
from stack.job_access import JobAccess
from stack.services.common import Check, Service, ensure_dir, http_check, http_get, port_check
from stack.services.mail import MailSink
from stack.services.postgres import PostgreSQL
from stack.services.redis import Redis
from stack.services.seaweedfs import S3_URL
from stack.services.sites import SiteCluster
from stack.settings import (
    CLUSTER,
    HOST,
    JOB_USER,
    MLFLOW_USER,
    PORTS,
    REPO,
    SLURM_ACCOUNT,
    StackPaths,
    StackSecrets,
    write_private,
)

AIRFLOW_URL = f"http://{HOST}:{PORTS['airflow']}"
CELERY_WORKERS = 2
EDGE_HEARTBEAT_S = 5  # a killed Edge worker's name is free again after 5 heartbeats (edge3's liveness check)

CELERY_CONCURRENCY = 8


class Airflow:
    def __init__(self, paths: StackPaths, secrets: StackSecrets, job_access: JobAccess, postgres: PostgreSQL,
                 redis: Redis, profile: str, sites: list[SiteCluster] | None = None) -> None:
        self.paths = paths
        self.secrets = secrets
        self.job_access = job_access
        self.postgres = postgres
        self.redis = redis
        self.profile = profile
        self.sites = sites or []

    @property
    def home(self) -> Path:
        return self.paths.state / "airflow"

    @property
    def passwords_file(self) -> Path:
        """The simple auth manager's users: admin, with the stack's generated password."""
        return self.paths.secrets / "airflow-passwords.json"

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            # PostgreSQL in every profile: SQLite answered "Database error" to concurrent writers
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url("airflow"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(PORTS["worker_logs"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(PORTS["triggerer_logs"]),
            **self.executor_env(),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["airflow_fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["airflow_jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": self.secrets["airflow_api_secret_key"],
            **self.one_machine_env(),
            "FACTORY_STATE": str(self.paths.state),
            "AIRFLOW__FACTORY__REPORT_ASSETS": str(self.paths.state / "web" / "report-assets" / "node_modules"),
        }

    @staticmethod
    def one_machine_env() -> dict[str, str]:
        """Where the stack departs from airflow.cfg, the production configuration: every component on this
        machine, on loopback, parsing with one process, connections imported into the database by airflow-db
        (not read from a secrets backend's files) and the reconciler watching the stack's own cluster."""
        return {
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(PORTS["airflow"]),
            "AIRFLOW__API__BASE_URL": AIRFLOW_URL,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{AIRFLOW_URL}/execution/",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SECRETS__BACKEND": "",
            "AIRFLOW__FACTORY__SLURM_RECONCILE_CONNECTIONS": "factory_slurm_local",
            # a task whose worker died is failed (and retried) after 60 s without heartbeats, not 300 s:
            # the fault tests kill Celery workers; heartbeats come every 5 s ([scheduler] in airflow.cfg)
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        }

    def executor_env(self) -> dict[str, str]:
        if self.profile != "production":
            # 2 cores: a few task processes at once; Slurm jobs run elsewhere, tasks mostly wait (deferred)
            return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4",
                    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4", "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "2"}
        return {
            # Celery runs every task but those of sites served by an Edge worker on their login node
            "AIRFLOW__CORE__EXECUTOR": f"CeleryExecutor,{EDGE_EXECUTOR}",
            "AIRFLOW__EDGE__API_ENABLED": "True", "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": str(EDGE_HEARTBEAT_S),
            "AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS": "airflow.providers.edge3.models.db.EdgeDBManager",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url(0),
            "AIRFLOW__CELERY__RESULT_BACKEND": self.redis.url(1),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
            # tasks mostly wait deferred: many may be in flight across the workers at once
            "AIRFLOW__CORE__PARALLELISM": str(CELERY_WORKERS * CELERY_CONCURRENCY),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "16",
            "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "20",
        }

    # ---------------------------------------------------------------- connections
    def slurm_site(self) -> dict[str, str]:
        """What every Slurm connection of the stack shares, whichever transport reaches the cluster."""
        return {"cluster": CLUSTER, "account": SLURM_ACCOUNT, "job_workdir": str(self.paths.jobs),
                "job_runtime": str(self.paths.venv("job-runtime"))}

    def connections(self) -> dict[str, dict[str, Any]]:
        """What Airflow tasks use to reach the stack; imported as Airflow connections.

        The one cluster is reachable three ways (slurmrestd, the Slurm commands on this host, and
        the login node over SSH), so each transport can be tested against the same jobs. Each site
        (stack/clusters) adds its login node over SSH and its slurmrestd with files over SSH.
        """
        slurm_site = self.slurm_site()
        return {
            "factory_s3": {
                "conn_type": "aws", "login": self.secrets["s3_access_key"],
                "password": self.secrets["s3_secret_key"],
                "extra": {"endpoint_url": S3_URL, "region_name": "us-east-1"},
            },
            "factory_mlflow": {
                "conn_type": "http", "host": HOST, "port": PORTS["mlflow"], "schema": "http",
                "login": MLFLOW_USER, "password": self.secrets["mlflow_user_password"],
            },
            "factory_slurm_local": {
                "conn_type": "slurm", "host": HOST, "port": PORTS["slurmrestd"], "schema": "http",
                "login": JOB_USER, "password": self.secrets.stable_slurm_token(JOB_USER),
                # the Airflow host is the cluster here: job files are on the file system both share
                "extra": {"transport": "rest", "files": "shared", "api_version": "auto", **slurm_site},
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
            "smtp_default": MailSink(self.paths).connection(),  # the pipelines' e-mail notifications
            **self.job_access.connections(),
            **{name: conn for site in self.sites for name, conn in site.connections().items()},
        }

    @property
    def connections_file(self) -> Path:
        return self.paths.secrets / "airflow-connections.json"

    @property
    def _imported_marker(self) -> Path:
        """A copy of the connections file as last imported: airflow-db runs again when they differ."""
        return self.home / ".connections-imported"

    def write_connections_file(self) -> None:
        write_private(self.connections_file, json.dumps(self.connections(), sort_keys=True))

    def _imported(self) -> str:
        """What the marker holds: the connections, and which database they went into."""
        database = hashlib.sha256(self.postgres.url("airflow").encode()).hexdigest()[:16]
        return f"{self.connections_file.read_text()}\n{database}\n"

    def connections_current(self) -> bool:
        marker = self._imported_marker
        return marker.exists() and marker.read_text() == self._imported()

    def mark_connections_imported(self) -> None:
        write_private(self._imported_marker, self._imported())

    # ---------------------------------------------------------------- services
    def prepare(self) -> None:
        ensure_dir(self.home, mode=0o700)
        write_private(self.passwords_file, json.dumps({"admin": self.secrets["airflow_admin_password"]}))

    @staticmethod
    def component_check(component: str) -> Check:
        """A component is healthy when the API server's health endpoint says so (it reads their heartbeats)."""
        def check() -> str | None:
            try:
                status, body = http_get(f"{AIRFLOW_URL}/api/v2/monitor/health")
            except OSError as error:
                return f"API server not answering: {error}"
            if status != 200:
                return f"health endpoint: HTTP {status}"
            state = json.loads(body).get(component) or {}
            return None if state.get("status") == "healthy" else f"{component}: {state}"
        return check

    def services(self) -> list[Service]:
        airflow = self.paths.bin("orchestrator", "airflow")
        env = self.env()
        return [
            Service("airflow-db", ["sh", "-c", f'"{airflow}" db migrate && "{airflow}" connections import '
                                   f'--overwrite "{self.connections_file}"'],
                    needs=("postgres",), env=env, prepare=self.prepare, health=lambda: None, oneshot=True,
                    is_current=self.connections_current, bootstrap=self.mark_connections_imported,
                    start_timeout_s=180),
            Service("airflow-api", [airflow, "api-server"], needs=("airflow-db",), env=env,
                    health=lambda: http_check(f"{AIRFLOW_URL}/api/v2/monitor/health"),
                    url=AIRFLOW_URL, start_timeout_s=120, ports=(PORTS["airflow"],)),
            Service("airflow-scheduler", [airflow, "scheduler"], needs=("airflow-db",), env=env,
                    health=self.component_check("scheduler"), start_timeout_s=120),
            Service("airflow-dag-processor", [airflow, "dag-processor"], needs=("airflow-db",), env=env,
                    health=self.component_check("dag_processor"), start_timeout_s=120),
            Service("airflow-triggerer", [airflow, "triggerer"], needs=("airflow-db",), env=env,
                    health=self.component_check("triggerer"), start_timeout_s=120, ports=(PORTS["triggerer_logs"],)),
            *(self.production_services(airflow, env) if self.profile == "production" else []),
        ]

    def production_services(self, airflow: str, env: dict[str, str]) -> list[Service]:
        """Celery workers (each serving its task logs on a port of its own) and a second triggerer: deferred
        tasks of a triggerer that stops move to the other."""
        workers = [
            Service(f"airflow-celery-worker-{number}",
                    [airflow, "celery", "worker", "--celery-hostname", f"worker{number}@%h",
                     "--concurrency", str(CELERY_CONCURRENCY), "--pid", str(self.paths.run / f"celery-{number}.pid")],
                    needs=("airflow-db", "redis"),
                    env={**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port)},
                    health=lambda port=port: port_check(port), start_timeout_s=120, ports=(port,))
            for number, port in ((1, PORTS["celery_worker_1_logs"]), (2, PORTS["celery_worker_2_logs"]))
        ]
        second_triggerer = Service(
            "airflow-triggerer-2", [airflow, "triggerer"], needs=("airflow-db",),
            env={**env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(PORTS["triggerer_2_logs"])},
            health=lambda: port_check(PORTS["triggerer_2_logs"]), start_timeout_s=120,
            ports=(PORTS["triggerer_2_logs"],))
        return [*workers, second_triggerer]
