"""SeaweedFS: the stack's S3 (datasets, MLflow's artifacts, validation reports, staged models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stack.job_access import JobAccess
from stack.services.common import Service, ensure_dir
from stack.settings import BUCKETS, HOST, PORTS, StackPaths, StackSecrets

S3_URL = f"http://{HOST}:{PORTS['s3']}"


class SeaweedFS:
    def __init__(self, paths: StackPaths, secrets: StackSecrets, job_access: JobAccess) -> None:
        self.paths = paths
        self.secrets = secrets
        self.job_access = job_access

    @property
    def config_file(self) -> Path:
        """The S3 identities, which SeaweedFS reads at start and again on SIGHUP."""
        return self.paths.secrets / "seaweedfs-s3.json"

    def admin_identity(self) -> dict[str, Any]:
        """The orchestrator's own S3 identity (tasks, the stack); Slurm jobs get their pipeline's (job_access)."""
        return {"name": "factory", "credentials": [{"accessKey": self.secrets["s3_access_key"],
                                                    "secretKey": self.secrets["s3_secret_key"]}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}

    def apply_identities(self, running_pid: int | None) -> None:
        """Write the admin's and every pipeline's job identities; a running SeaweedFS is told to reread them."""
        self.job_access.apply_s3(self.config_file, running_pid, self.admin_identity())

    def prepare(self) -> None:
        ensure_dir(self.paths.data / "seaweedfs", mode=0o700)
        self.apply_identities(None)

    def client(self):
        """An S3 client with the orchestrator's identity; short timeouts, as it also serves the health check."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=S3_URL, region_name="us-east-1",
            aws_access_key_id=self.secrets["s3_access_key"],
            aws_secret_access_key=self.secrets["s3_secret_key"],
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def health(self) -> str | None:
        try:
            self.client().list_buckets()
        except Exception as error:
            return f"S3 list_buckets: {error}"
        return None

    def bootstrap_buckets(self) -> None:
        client = self.client()
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        for bucket in BUCKETS:
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)

    def service(self) -> Service:
        weed = str(self.paths.state / "tools" / "bin" / "weed")
        return Service("seaweedfs", [weed, "-logtostderr", "server", f"-dir={self.paths.data}/seaweedfs",
                                     f"-ip={HOST}", f"-ip.bind={HOST}",
                                     f"-master.port={PORTS['seaweed_master']}",
                                     f"-volume.port={PORTS['seaweed_volume']}",
                                     f"-filer.port={PORTS['seaweed_filer']}", "-volume.max=64",
                                     "-master.volumeSizeLimitMB=1024", "-master.electionTimeout=1s",
                                     "-master.telemetry=false", "-filer.disableHttp",
                                     "-s3", f"-s3.port={PORTS['s3']}", f"-s3.config={self.config_file}",
                                     "-s3.port.iceberg=0"],
                       health=self.health, prepare=self.prepare, bootstrap=self.bootstrap_buckets, url=S3_URL,
                       start_timeout_s=60, ports=tuple(PORTS[name] for name in (
                           "s3", "seaweed_master", "seaweed_volume", "seaweed_filer")))
