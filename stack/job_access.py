"""Each pipeline's job credentials in the local stack (least privilege, SECURITY.md).

For every pipeline in ``pipelines/``: an S3 identity whose actions are ``operators.connections.
job_s3_actions`` (read the dataset store and the pipeline's staged models, write its dataset's validation
reports), an MLflow user that ``start_run`` grants EDIT on the pipeline's experiment and READ on its model
(the server's default is NO_PERMISSIONS), and the two Airflow connections that hold them
(``operators.connections.job_connections``). A Slurm job gets only these, never the orchestrator's keys.
At a factory the same identities come from the site's object store and a secrets backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.connections import job_connections, job_s3_actions
from operators.http_json import JsonClient
from stack.settings import HOST, PORTS, StackSecrets, write_private

DATASETS_BUCKET = "datasets"  # the DVC remote (stack/datasets.py: s3://datasets/dvc)


@dataclass(frozen=True)
class PipelineJobs:
    pipeline: str
    dag_id: str
    dataset: str

    @property
    def s3_identity(self) -> str:
        return f"job-{self.pipeline}"

    @property
    def mlflow_user(self) -> str:
        return f"job-{self.pipeline}"


def pipelines() -> list[PipelineJobs]:
    """The pipelines whose specs load (a broken one gets no credentials until it is fixed)."""
    from operators.spec import PIPELINES_DIR, load_all

    specs, _ = load_all(PIPELINES_DIR)
    return [PipelineJobs(spec.name, spec.dag_id, spec.dataset.name) for spec in specs]


class JobAccess:
    def __init__(self, secrets_store: StackSecrets) -> None:
        self.secrets = secrets_store

    def _secret(self, pipeline: str, kind: str) -> str:
        return self.secrets.generated(f"job_{pipeline}_{kind}", {
            "s3_access_key": lambda: "AKJ" + secrets.token_hex(8).upper(),
        }.get(kind, lambda: secrets.token_urlsafe(24)))

    def s3_identities(self) -> list[dict[str, Any]]:
        return [{"name": jobs.s3_identity,
                 "credentials": [{"accessKey": self._secret(jobs.pipeline, "s3_access_key"),
                                  "secretKey": self._secret(jobs.pipeline, "s3_secret_key")}],
                 "actions": job_s3_actions(jobs.dag_id, jobs.dataset, DATASETS_BUCKET)} for jobs in pipelines()]

    def connections(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for jobs in pipelines():
            names = job_connections(jobs.pipeline)
            found[names.s3] = {"conn_type": "aws", "login": self._secret(jobs.pipeline, "s3_access_key"),
                               "password": self._secret(jobs.pipeline, "s3_secret_key"),
                               "extra": {"endpoint_url": f"http://{HOST}:{PORTS['s3']}", "region_name": "us-east-1"},
                               "description": f"{jobs.pipeline}'s Slurm jobs: S3 scoped to its inputs and outputs"}
            password = self._secret(jobs.pipeline, "mlflow_password")
            found[names.mlflow] = {"conn_type": "http", "host": HOST, "port": PORTS["mlflow"], "schema": "http",
                                   "login": jobs.mlflow_user, "password": password,
                                   "description": f"{jobs.pipeline}'s Slurm jobs: MLflow, its own experiment only"}
        return found

    def ensure_mlflow_users(self, admin_headers: dict[str, str]) -> None:
        """Create each job user, or set its password again (the stack's secret is the truth)."""
        base = f"http://{HOST}:{PORTS['mlflow']}/api/2.0/mlflow/users"
        for jobs in pipelines():
            body = {"username": jobs.mlflow_user, "password": self._secret(jobs.pipeline, "mlflow_password")}
            ensure_mlflow_user(base, admin_headers, body)

    def fingerprint(self) -> str:
        """A digest of every identity and password: equal to the last applied one means nothing to do."""
        desired = {"s3": self.s3_identities(), "connections": self.connections()}
        return hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()

    def apply_s3(self, config_file: Path, seaweedfs_pid: int | None, admin_identity: dict[str, Any]) -> bool:
        """Write the identities; a running SeaweedFS rereads them on SIGHUP (it merges: a removed identity
        keeps working until a restart, so removals are written as disabled). True if anything changed."""
        identities = [admin_identity, *self.s3_identities()]
        previous = json.loads(config_file.read_text()).get("identities", []) if config_file.exists() else []
        current = {identity["name"] for identity in identities}
        identities += [{**identity, "disabled": True, "actions": []} for identity in previous
                       if identity["name"] not in current and identity["name"].startswith("job-")]
        text = json.dumps({"identities": identities}, sort_keys=True)
        if config_file.exists() and config_file.read_text() == text:
            return False
        write_private(config_file, text)
        if seaweedfs_pid is not None:
            os.kill(seaweedfs_pid, signal.SIGHUP)
        return True


def ensure_mlflow_user(base: str, admin_headers: dict[str, str], body: dict[str, str]) -> None:
    """Create the MLflow user, or set its password again when it exists (as the MLflow admin)."""
    users = JsonClient(base, RuntimeError, admin_headers, timeout_s=10, secrets=[body["password"]])
    exists = users.send("GET", f"/get?username={body['username']}").status_code == 200
    users.call(*(("PATCH", "/update-password") if exists else ("POST", "/create")), body)
