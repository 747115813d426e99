"""What the pipeline's tasks hand each other, as named types: the data path of ``build_dag``.

XCom carries each record as plain JSON (what the Airflow UI and the REST API show, unchanged); a task
receives its inputs as XComArgs and reads them with ``Record.of(value)``, so a field that is renamed or
missing fails where it is read, with the record's name, not deep inside a task.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Self

from operators.errors import FactoryError


class RecordError(FactoryError, ValueError):
    """An upstream task's XCom is not the record this task expects."""


@dataclass(frozen=True)
class Record:
    @classmethod
    def of(cls, value: Any) -> Self:
        """The record from an XCom value (a dict); unknown keys are kept out, missing ones named."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise RecordError(f"{cls.__name__}: expected the upstream task's record, got {type(value).__name__}")
        known = {spec.name for spec in fields(cls)}
        required = {spec.name for spec in fields(cls) if spec.default is MISSING and spec.default_factory is MISSING}
        missing = sorted(required - set(value))
        if missing:
            raise RecordError(f"{cls.__name__}: the upstream record has no {', '.join(missing)}")
        return cls(**{key: item for key, item in value.items() if key in known})

    def as_xcom(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PinnedDataset(Record):
    """``pin_dataset``: the revision resolved to a commit, and each split's md5, size and S3 URL (a sharded
    folder: its shards and manifest). ``repository`` as the spec writes it."""

    name: str
    repository: str
    revision: str
    commit: str
    data: dict[str, Any]
    test: dict[str, Any]
    earlier: list[str] = field(default_factory=list)  # registry tags on the commit's history


@dataclass(frozen=True)
class ValidationOutcome(Record):
    """``apply_contract``: the contract's verdict on the pinned data (the full summary stays in S3)."""

    status: str  # passed, warned, failed, unreadable
    report: dict[str, Any]
    success: bool | None = None
    dataset: str | None = None
    revision: str | None = None
    commit: str | None = None
    md5: str | None = None
    rows: int | None = None
    counts: dict[str, Any] | None = None
    error: str | None = None
    validated_on: str | None = None
    seconds_total: float | None = None


@dataclass(frozen=True)
class StewardDecision(Record):
    """``steward_review``: approve or reject by whom and when; ``not needed`` when no warn rule broke."""

    decision: str
    by: str | None = None
    at: str | None = None
    dag_id: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class TrackingRun(Record):
    """``start_run``: the MLflow run the jobs log into, the run's training params and the jobs' inputs."""

    run_id: str
    experiment_id: str
    params: dict[str, Any]
    train_inputs: list[dict[str, Any]]
    test_inputs: list[dict[str, Any]]


@dataclass(frozen=True)
class SlurmJob(Record):
    """A Slurm step (``train``, ``evaluate``, ``validate_data_on_cluster``): the job's accounting."""

    job_id: int
    state: str
    cluster: str | None = None
    workdir: str | None = None
    transport: str | None = None
    exit_code: int | None = None
    reason: str = ""
    elapsed_s: int | None = None
    cpu_time_s: float | None = None
    max_rss_bytes: int | None = None
    gpus: int = 0
    gpu_hours: float | None = None
    energy_j: int | None = None
    restarts: int = 0
    user: str = ""
    allocation: dict[str, int] | None = None  # what the account has left after the job, {TRES: minutes}


@dataclass(frozen=True)
class Replayed(Record):
    """``replay_train``/``replay_evaluate``: what an offline job's store added to the run; after training, the
    evaluation job's inputs (the test split and the models staged in S3)."""

    params: int = 0
    metrics: int = 0
    tags: int = 0
    artifacts: int = 0
    models: int = 0
    added: dict[str, int] = field(default_factory=dict)
    evaluate_inputs: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class GateVerdict(Record):
    """``gate``: promote or not, why, the comparison with the champion and what the jobs cost."""

    promote: bool
    reasons: list[str]
    primary_metric: str
    challenger: float | None
    champion: float | None
    comparison: list[dict[str, Any]]
    champion_version: str | None
    cost: dict[str, float | None]


@dataclass(frozen=True)
class RegisteredVersion(Record):
    """``register``: the model version, whether the gate promoted it, and the champion before it."""

    model: str
    version: str
    promoted: bool
    previous_champion: str | None = None


@dataclass(frozen=True)
class Rollout(Record):
    """``push_to_inference``: the rollout's steps and timings; the version it replaced."""

    model: str
    version: str
    previous_version: str | None
    registered_model: str
    rolled_out_at: float
    seconds: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0
    smoke: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
