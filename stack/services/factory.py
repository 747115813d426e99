"""The local factory: every service family of the stack for one state folder, in the order ``up`` lists them."""

from __future__ import annotations

import json
from collections.abc import Callable

from stack.clusters.site import SITES, sites_enabled
from stack.job_access import JobAccess
from stack.process import StackError
from stack.services.airflow import AIRFLOW_URL, Airflow
from stack.services.common import Service
from stack.services.dataset_registry import DatasetRegistry
from stack.services.edge import EdgeWorker
from stack.services.job_access import JobAccessStep
from stack.services.login_node import LoginNode, ensure_client_key
from stack.services.mail import MailSink
from stack.services.mariadb import MariaDB
from stack.services.mlflow import MLFLOW_URL, MLflow
from stack.services.mlserver import MLSERVER_URL, MLServer
from stack.services.munge import Munge
from stack.services.postgres import PostgreSQL
from stack.services.redis import Redis
from stack.services.seaweedfs import S3_URL, SeaweedFS
from stack.services.sites import SiteCluster
from stack.services.slurm import REST_URL, Slurm
from stack.settings import (
    BUCKETS,
    CLUSTER,
    HOST,
    JOB_USER,
    MLFLOW_USER,
    NODE,
    PORTS,
    SLURM_ACCOUNT,
    StackPaths,
    StackSecrets,
    short_hostname,
    write_private,
)


class LocalFactory:
    """Builds the service list for one stack state folder."""

    def __init__(self, paths: StackPaths, profile: str | None = None) -> None:
        self.paths = paths
        self.profile = profile or paths.profile()
        self.secrets = StackSecrets(paths)
        self.job_access = JobAccess(self.secrets)
        self.hostname = short_hostname()
        self.munge = Munge()
        self.mariadb = MariaDB(paths, self.secrets)
        self.slurm = Slurm(paths, self.secrets, self.hostname)
        self.login_node = LoginNode(paths)
        self.s3 = SeaweedFS(paths, self.secrets, self.job_access)
        self.dataset_registry = DatasetRegistry(paths, self.secrets)
        self.postgres = PostgreSQL(paths, self.secrets)
        self.redis = Redis(paths, self.secrets)
        self.mail = MailSink(paths)
        self.mlflow = MLflow(paths, self.secrets, self.postgres)
        self.job_access_step = JobAccessStep(paths, self.job_access, self.s3, self.mlflow)
        self.mlserver = MLServer(paths)
        self.sites = [SiteCluster(paths, site) for site in SITES]
        self.with_sites = sites_enabled()
        self.airflow = Airflow(paths, self.secrets, self.job_access, self.postgres, self.redis, self.profile,
                               self.sites if self.with_sites else [])

    def services(self) -> list[Service]:
        return [
            self.munge.service(),
            self.mariadb.service(),
            *self.slurm.services(),
            self.login_node.service(),
            self.s3.service(),
            self.postgres.service(),
            *([self.redis.service()] if self.profile == "production" else []),
            self.mail.service(),
            self.dataset_registry.service(),
            self.mlflow.service(),
            self.job_access_step.service(),
            self.mlserver.service(),
            *self.airflow.services(),
            *(self.site_services() if self.with_sites else []),
            *(self.edge_services() if self.with_sites else []),
        ]

    def edge_workers(self) -> list[EdgeWorker]:
        """An Edge worker on the login node of each site that names an Edge queue (production profile: the
        local one has no EdgeExecutor)."""
        if self.profile != "production":
            return []
        return [EdgeWorker(self.paths, self.secrets, site, site.site.edge_queue) for site in self.sites
                if site.site.edge_queue]

    def edge_services(self) -> list[Service]:
        return [service for worker in self.edge_workers() for service in worker.services()]

    def site_services(self) -> list[Service]:
        """The two sites (stack/clusters): FACTORY_WITH_SITES=0 leaves them out of ``up``."""
        return [service for site in self.sites for service in site.services()]

    def prepare_sites(self) -> None:
        """What the sites need of the stack: its state folders and the SSH key Airflow logs in to them with."""
        self.paths.ensure()
        ensure_client_key(self.paths)

    def cancel_site_jobs(self, pid_of: Callable[[str], int | None]) -> None:
        for site in self.sites:
            site.cancel_jobs(pid_of)

    def teardown_sites(self, progress: Callable[[str], None]) -> list[int]:
        """Always, whether the sites are on or not: a site left by an earlier ``up`` goes too. Each site is
        torn down even when the other one failed to; the failures are raised together."""
        leftovers, failures = [], []
        for site in self.sites:
            try:
                leftovers += site.teardown(progress)
            except StackError as error:
                failures.append(str(error))
        if failures:
            raise StackError("\n".join(failures))
        return leftovers

    def prepare_common(self) -> None:
        """What several services share: the state folders, the Slurm JWT key and the Airflow connections."""
        self.paths.ensure()
        self.slurm.ensure_jwt_key()
        if self.with_sites:
            ensure_client_key(self.paths)  # now, before the stack's and the sites' sshd race to make it
        self.airflow.write_connections_file()

    def airflow_env(self) -> dict[str, str]:
        return self.airflow.env()

    def s3_client(self):
        return self.s3.client()

    def write_info_file(self) -> None:
        """Endpoints and credentials for clients of the stack: tests, the demo, the README's hints."""
        info = {
            "state": str(self.paths.state), "profile": self.profile,
            "cluster": CLUSTER, "node": NODE, "job_user": JOB_USER, "account": SLURM_ACCOUNT,
            "jobs_dir": str(self.paths.jobs),
            "model_repository": str(self.paths.model_repository),
            "venvs": {name: str(self.paths.venv(name))
                      for name in ("orchestrator", "job-runtime", "serving", "torch-runtime")},
            "s3": {"endpoint_url": S3_URL, "access_key": self.secrets["s3_access_key"],
                   "secret_key": self.secrets["s3_secret_key"], "buckets": list(BUCKETS)},
            "mlflow": {"url": MLFLOW_URL, "username": MLFLOW_USER,
                       "password": self.secrets["mlflow_user_password"],
                       "admin_password": self.secrets["mlflow_admin_password"]},
            "slurmrestd": {"url": REST_URL, "user": JOB_USER,
                           "token": self.secrets.stable_slurm_token(JOB_USER)},
            "mlserver": {"url": MLSERVER_URL},
            "ssh": {"host": HOST, "port": PORTS["sshd"], "user": JOB_USER, "key_file": str(self.paths.ssh_key),
                    "known_hosts": str(self.paths.ssh_known_hosts)},
            "airflow": {"url": AIRFLOW_URL, "username": "admin",
                        "password": self.secrets["airflow_admin_password"]},
            "sites": {site.site.name: str(site.layout.info_file) for site in self.sites} if self.with_sites else {},
        }
        write_private(self.paths.info_file, json.dumps(info, indent=2))
