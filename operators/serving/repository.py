"""An MLServer model repository on a file system the server reads: one folder per version, one default entry.

    <root>/<model>/<version>/model-settings.json   version <version>, files in ./model
    <root>/<model>/default/model-settings.json     version "default": what /v2/models/<model>/infer serves

MLServer answers unversioned requests with its default model: the highest version loaded, even while
that one is still loading, so a new version would take traffic before its checks. Versions compare as
numbers, or as text when one is not a number, and "default" sorts after every number: the default
entry stays the default whatever is loaded next to it, and a switch is a reload of that one entry (new
copy loaded before the old one is dropped). An unversioned entry would not do: MLServer loads the first
one as a new copy of the version serving by default and unloads that version.
Every file is written under a temporary name and renamed, so the server never reads half a version.
The default entry runs ``served_version_runtime.py`` (copied beside its settings), so its answers name
the registered version that computed them instead of "default"."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

RUNTIME = "mlserver_mlflow.MLflowRuntime"
SETTINGS = "model-settings.json"
DEFAULT_ENTRY = "default"
DEFAULT_RUNTIME_FILE = "factory_served_version.py"  # a name no model folder or package uses
DEFAULT_RUNTIME = "factory_served_version.ServedVersionRuntime"
RUNTIME_SOURCE = Path(__file__).with_name("served_version_runtime.py")


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def version_folder(self, model: str, version: str) -> Path:
        return self.root / model / version

    def install(self, model: str, version: str, model_dir: Path) -> Path:
        """Copy an MLflow model folder in as ``version`` (replacing a leftover of an earlier attempt)."""
        target = self.version_folder(model, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            shutil.copytree(model_dir, staging / "model")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _write_json(target / SETTINGS, {"name": model, "implementation": RUNTIME,
                                        "parameters": {"uri": "./model", "version": version}})
        return target

    def installed_versions(self, model: str) -> list[str]:
        folder = self.root / model
        if not folder.is_dir():
            return []
        return sorted((entry.name for entry in folder.iterdir()
                       if entry.name != DEFAULT_ENTRY and (entry / SETTINGS).exists()), key=_version_order)

    def remove(self, model: str, version: str) -> None:
        shutil.rmtree(self.version_folder(model, version), ignore_errors=True)

    def default_version(self, model: str) -> str | None:
        settings = self.root / model / DEFAULT_ENTRY / SETTINGS
        if not settings.exists():
            return None
        return json.loads(settings.read_text())["parameters"]["extra"]["serves_version"]

    def set_default(self, model: str, version: str) -> None:
        if not (self.version_folder(model, version) / SETTINGS).exists():
            raise FileNotFoundError(f"{model} version {version} is not in the model repository {self.root}")
        default = self.root / model / DEFAULT_ENTRY
        default.mkdir(parents=True, exist_ok=True)
        _write_text(default / DEFAULT_RUNTIME_FILE, RUNTIME_SOURCE.read_text())
        _write_json(default / SETTINGS, {
            "name": model, "implementation": DEFAULT_RUNTIME,
            "parameters": {"uri": f"../{version}/model", "version": DEFAULT_ENTRY,
                           "extra": {"serves_version": version}}})

    def model_file(self, model: str, version: str, name: str) -> Path:
        return self.version_folder(model, version) / "model" / name


def _version_order(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def _write_json(path: Path, content: dict) -> None:
    _write_text(path, json.dumps(content, indent=2))


def _write_text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(content)
    os.replace(temporary, path)
