"""The job-access one-shot: every pipeline's job identities (stack/job_access.py) applied to the running
SeaweedFS and MLflow, so a pipeline added while the stack is up gets its credentials on the next ``up``."""

from __future__ import annotations

from pathlib import Path

from stack.job_access import JobAccess
from stack.process import Supervised
from stack.services.common import Service
from stack.services.mlflow import MLflow
from stack.services.seaweedfs import SeaweedFS
from stack.settings import StackPaths, write_private


class JobAccessStep:
    def __init__(self, paths: StackPaths, job_access: JobAccess, s3: SeaweedFS, mlflow: MLflow) -> None:
        self.paths = paths
        self.job_access = job_access
        self.s3 = s3
        self.mlflow = mlflow

    def apply(self) -> None:
        """SeaweedFS rereads its identities on SIGHUP; MLflow users are created or their passwords set again."""
        pid = Supervised("seaweedfs", self.paths.run, self.paths.logs).pid()
        self.s3.apply_identities(pid)
        self.job_access.ensure_mlflow_users(self.mlflow.admin_headers())
        write_private(self.marker, self.job_access.fingerprint())

    @property
    def marker(self) -> Path:
        return self.paths.state / "job-access.applied"

    def current(self) -> bool:
        """Applied already (the same identities and passwords): a second ``up`` starts nothing."""
        return self.marker.exists() and self.marker.read_text() == self.job_access.fingerprint()

    def service(self) -> Service:
        return Service("job-access", [], needs=("seaweedfs", "mlflow"), health=lambda: None, oneshot=True,
                       is_current=self.current, bootstrap=self.apply, start_timeout_s=60)
