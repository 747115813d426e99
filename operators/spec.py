"""The pipeline spec (``pipelines/<name>/pipeline.yaml``): load, check, and describe mistakes.

A mistake names the file, the field and what is allowed, and nothing is built from a bad spec.
Imports no Airflow and no heavy library, so DAG parsing stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "aifactory/v1"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+=,-]*$")  # no shell metacharacters, spaces or newlines


class SpecError(ValueError):
    """A spec mistake: ``file: field: what is wrong (allowed: ...)``."""


@dataclass(frozen=True)
class DatasetSpec:
    repository: str
    path: str
    revision: str
    test_path: str
    name: str


@dataclass(frozen=True)
class ResourcesSpec:
    cpus: int = 1
    memory: str = "1G"
    time: str = "00:30:00"
    partition: str | None = None
    gpus: int = 0


@dataclass(frozen=True)
class TrainingSpec:
    script: str
    params: dict[str, Any] = field(default_factory=dict)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)


@dataclass(frozen=True)
class EvaluationSpec:
    script: str
    primary_metric: str
    thresholds: dict[str, float] = field(default_factory=dict)
    min_improvement: float = 0.0
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)


@dataclass(frozen=True)
class RegistrySpec:
    model_name: str


@dataclass(frozen=True)
class ServingSpec:
    model_name: str
    allowed_outputs: list[Any] | None = None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    owners: list[str]
    dataset: DatasetSpec
    contract: str
    site: str
    training: TrainingSpec
    evaluation: EvaluationSpec
    registry: RegistrySpec
    serving: ServingSpec
    folder: Path
    schedule: str | None = None

    @property
    def dag_id(self) -> str:
        return f"pipeline_{self.name}"

    @property
    def contract_file(self) -> Path:
        return self.folder.parent.parent / "data_contracts" / f"{self.contract}.yaml"


def _require_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    """A dataclass from a mapping; unknown keys, missing keys and wrong nesting are errors."""
    raw = _require_mapping(raw, where)
    known = {f.name: f for f in fields(cls) if f.name != "folder"}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(known))})")
    missing = [name for name, spec_field in known.items() if name not in raw
               and spec_field.default is MISSING and spec_field.default_factory is MISSING]
    if missing:
        raise SpecError(f"{where}.{missing[0]}: required field is missing")
    nested = NESTED.get(cls, {})
    values = {name: _build(nested[name], value, f"{where}.{name}") if name in nested else value
              for name, value in raw.items()}
    return cls(**values, **({"folder": Path()} if cls is PipelineSpec else {}))


def _check_safe(value: Any, where: str) -> None:
    if not isinstance(value, str) or not SAFE_VALUE.match(value):
        raise SpecError(f"{where}: {value!r} is not allowed (letters, digits and _.:/@+=,- only; "
                        "no spaces, quotes, shell metacharacters or newlines)")


def _check_relative(value: str, where: str) -> None:
    _check_safe(value, where)
    if value.startswith("/") or ".." in Path(value).parts:
        raise SpecError(f"{where}: {value!r} must be a path inside the pipeline folder (no '/' start, no '..')")


def _check_resources(resources: ResourcesSpec, where: str) -> None:
    for name in ("cpus", "gpus"):
        value = getattr(resources, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (name == "cpus" and value < 1):
            raise SpecError(f"{where}.{name}: {value!r} must be a whole number >= {1 if name == 'cpus' else 0}")
    if not re.fullmatch(r"\d+[KMGT]?", str(resources.memory)):
        raise SpecError(f"{where}.memory: {resources.memory!r} must look like 512M or 4G")
    if not re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}|\d+", str(resources.time)):
        raise SpecError(f"{where}.time: {resources.time!r} must be minutes or [D-]HH:MM:SS")
    if resources.partition is not None:
        _check_safe(resources.partition, f"{where}.partition")


NESTED: dict[type, dict[str, type]] = {
    PipelineSpec: {"dataset": DatasetSpec, "training": TrainingSpec, "evaluation": EvaluationSpec,
                   "registry": RegistrySpec, "serving": ServingSpec},
    TrainingSpec: {"resources": ResourcesSpec},
    EvaluationSpec: {"resources": ResourcesSpec},
}


def load_spec(path: Path) -> PipelineSpec:
    """Load and check one ``pipeline.yaml``; every error message starts with the file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    try:
        raw = dict(_require_mapping(raw, "spec"))
        if raw.pop("apiVersion", None) != API_VERSION:
            raise SpecError(f"apiVersion: must be {API_VERSION!r}")
        spec = _build(PipelineSpec, raw, "spec")
        _validate(spec)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
    object.__setattr__(spec, "folder", path.parent)
    return spec


def _validate(spec: PipelineSpec) -> None:
    if not isinstance(spec.name, str) or not NAME_PATTERN.match(spec.name):
        raise SpecError(f"spec.name: {spec.name!r} must match {NAME_PATTERN.pattern}")
    for key in ("repository", "path", "revision", "test_path", "name"):
        _check_safe(expand(getattr(spec.dataset, key)), f"spec.dataset.{key}")
    _check_safe(spec.contract, "spec.contract")
    _check_safe(spec.site, "spec.site")
    _check_relative(spec.training.script, "spec.training.script")
    _check_relative(spec.evaluation.script, "spec.evaluation.script")
    _check_resources(spec.training.resources, "spec.training.resources")
    _check_resources(spec.evaluation.resources, "spec.evaluation.resources")
    if not isinstance(spec.training.params, dict):
        raise SpecError("spec.training.params: expected a mapping of parameter names to values")
    for metric, bound in spec.evaluation.thresholds.items():
        if not isinstance(bound, int | float) or isinstance(bound, bool):
            raise SpecError(f"spec.evaluation.thresholds.{metric}: {bound!r} must be a number")
    _check_safe(spec.registry.model_name, "spec.registry.model_name")
    _check_safe(spec.serving.model_name, "spec.serving.model_name")
    if not isinstance(spec.owners, list) or not spec.owners:
        raise SpecError("spec.owners: list at least one owner")


def expand(value: str) -> str:
    """``${FACTORY_STATE}`` and other environment variables in repository URLs."""
    if not isinstance(value, str):
        return value
    expanded = os.path.expandvars(value)
    unresolved = re.findall(r"\$\{?(\w+)", expanded)
    if unresolved:
        raise SpecError(f"{value!r}: environment variable {unresolved[0]} is not set")
    return expanded


def discover(pipelines_dir: Path) -> list[Path]:
    return sorted(pipelines_dir.glob("*/pipeline.yaml"))
