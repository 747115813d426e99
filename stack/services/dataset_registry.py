"""The dataset registry: a one-shot that builds the git + DVC repository of pinned datasets (stack/datasets.py)."""

from __future__ import annotations

from stack.datasets import REGISTRY_NAME, ensure_dataset_registry, registry_is_complete
from stack.services.common import Service
from stack.services.seaweedfs import S3_URL
from stack.settings import StackPaths, StackSecrets


class DatasetRegistry:
    def __init__(self, paths: StackPaths, secrets: StackSecrets) -> None:
        self.paths = paths
        self.secrets = secrets

    def is_current(self) -> bool:
        return registry_is_complete(self.paths.data / REGISTRY_NAME)

    def bootstrap(self) -> None:
        """Pushes the datasets' bytes to S3, so it runs once SeaweedFS is healthy."""
        ensure_dataset_registry(self.paths, S3_URL, self.secrets["s3_access_key"], self.secrets["s3_secret_key"])

    def service(self) -> Service:
        return Service("dataset-registry", [], needs=("seaweedfs",), health=lambda: None, oneshot=True,
                       is_current=self.is_current, bootstrap=self.bootstrap, start_timeout_s=120)
