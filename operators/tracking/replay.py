"""Replay a job's offline MLflow store into the central server's run, idempotently.

Copies what the job's run logged: params, metrics with their steps and timestamps, tags, artifacts and
logged models (with their artifacts, params and tags). Everything already on the server is compared and
skipped, so a replay that crashed half-way, or one run twice, ends with exactly one copy of each item.
A param logged with a different value on each side is an error naming it: the server's record stays.
Imports no Airflow (the replay task passes clients in); mlflow is imported by the caller's process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from operators.errors import TrackingError

BATCH = 1000  # MLflow's log_batch limit for metrics
SYSTEM_TAG_PREFIX = "mlflow."  # the server's own (user, source, run name): never overwritten


class ReplayError(TrackingError):
    """The offline store cannot be replayed as it is; the message names the store and the item."""


@dataclass
class Counts:
    """What the offline run holds, and how much of it this replay had to add."""

    params: int = 0
    metrics: int = 0  # metric points (key, step, timestamp, value)
    tags: int = 0
    artifacts: int = 0  # files
    models: int = 0
    added: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("params", "metrics", "tags", "artifacts", "models"), 0))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def offline_run(local: Any, store: Path) -> Any:
    """The one run a job's store holds (a job logs into one run)."""
    runs = [run for experiment in local.search_experiments()
            for run in local.search_runs([experiment.experiment_id], max_results=100)]
    if len(runs) != 1:
        names = ", ".join(run.info.run_id for run in runs) or "none"
        raise ReplayError(f"{store}: expected the job's one MLflow run, found {len(runs)} ({names})")
    return runs[0]


def local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


def in_store(uri: str, recorded_root: str, store: Path) -> Path:
    """An artifact location the job recorded (a path on the cluster: ``<job folder>/mlflow/artifacts/...``),
    found in the copy of its store here. Anything outside the store's artifact folder is refused: the
    store is the job's writing, and its database could name any file of this machine."""
    from operators.tracking.offline import ARTIFACTS

    folder = (store / ARTIFACTS).resolve()
    try:
        target = (folder / PurePosixPath(local_path(uri)).relative_to(local_path(recorded_root))).resolve()
    except ValueError:
        target = None
    if target is None or (target != folder and folder not in target.parents):
        raise ReplayError(f"{store}: artifact location {uri} is outside the job's artifact folder "
                          f"{recorded_root}: not replayed")
    return target


def files_under(folder: Path) -> Iterator[tuple[str, Path]]:
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            yield path.relative_to(folder).as_posix(), path


def remote_files(central: Any, run_id: str | None = None, model_id: str | None = None,
                 path: str | None = None) -> dict[str, int | None]:
    """Artifact path → size on the server, recursively (a run's or a logged model's)."""
    if model_id is not None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        listing = get_artifact_repository(f"models:/{model_id}", tracking_uri=central.tracking_uri).list_artifacts(path)
    else:
        listing = central.list_artifacts(run_id, path)
    found: dict[str, int | None] = {}
    for item in listing:
        if item.is_dir:
            found.update(remote_files(central, run_id, model_id, item.path))
        else:
            found[item.path] = item.file_size
    return found


def replay_params(local_run: Any, central: Any, central_run: Any, counts: Counts, store: Path) -> None:
    from mlflow.entities import Param

    run_id, present = central_run.info.run_id, central_run.data.params
    missing = []
    for key, value in sorted(local_run.data.params.items()):
        counts.params += 1
        if key not in present:
            missing.append(Param(key, value))
        elif present[key] != value:
            raise ReplayError(f"{store}: param {key}={value!r} conflicts with {present[key]!r} on the server's "
                              f"run {run_id}")
    for start in range(0, len(missing), 100):
        central.log_batch(run_id, params=missing[start:start + 100])
    counts.added["params"] += len(missing)


def replay_metrics(local: Any, local_run: Any, central: Any, run_id: str, counts: Counts) -> None:
    missing = []
    for key in sorted(local_run.data.metrics):
        history = local.get_metric_history(local_run.info.run_id, key)
        present = {(m.step, m.timestamp, m.value) for m in central.get_metric_history(run_id, key)}
        counts.metrics += len(history)
        missing += [m for m in history if (m.step, m.timestamp, m.value) not in present]
    for start in range(0, len(missing), BATCH):
        central.log_batch(run_id, metrics=missing[start:start + BATCH])
    counts.added["metrics"] += len(missing)


def replay_tags(local_run: Any, central: Any, central_run: Any, counts: Counts, extra: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    wanted = {k: v for k, v in local_run.data.tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)} | extra
    run_id, present = central_run.info.run_id, central_run.data.tags
    missing = [RunTag(k, v) for k, v in sorted(wanted.items()) if present.get(k) != v]
    counts.tags += len(wanted)
    if missing:
        central.log_batch(run_id, tags=missing)
    counts.added["tags"] += len(missing)


def replay_artifacts(local_run: Any, central: Any, run_id: str, counts: Counts, found: Any) -> None:
    folder = found(local_run.info.artifact_uri)
    present = remote_files(central, run_id=run_id)
    for relative, path in files_under(folder):
        counts.artifacts += 1
        if present.get(relative) != path.stat().st_size:
            parent = str(Path(relative).parent)
            central.log_artifact(run_id, str(path), None if parent == "." else parent)
            counts.added["artifacts"] += 1


def replay_models(local: Any, local_run: Any, central: Any, central_run: Any, counts: Counts, found: Any) -> None:
    """Each logged model once on the server, linked to the central run (so ``runs:/<run>/<name>`` resolves)."""
    from mlflow.entities import LoggedModelStatus

    run_id, experiment_id = central_run.info.run_id, central_run.info.experiment_id
    models = [m for m in local.search_logged_models(experiment_ids=[local_run.info.experiment_id])
              if m.source_run_id == local_run.info.run_id]
    for model in models:
        counts.models += 1
        existing = [m for m in central.search_logged_models(experiment_ids=[experiment_id],
                                                            filter_string=f"name = '{model.name}'")
                    if m.source_run_id == run_id]
        ready = [m for m in existing if m.status == LoggedModelStatus.READY]
        if ready:
            continue
        target = existing[0] if existing else central.create_logged_model(
            experiment_id, name=model.name, source_run_id=run_id, params=model.params,
            tags={k: v for k, v in model.tags.items() if not k.startswith(SYSTEM_TAG_PREFIX)},
            model_type=model.model_type)
        central.log_model_artifacts(target.model_id, str(found(model.artifact_location)))
        central.finalize_logged_model(target.model_id, LoggedModelStatus.READY)
        counts.added["models"] += 1


def replay(store: Path, central: Any, run_id: str, extra_tags: dict[str, str] | None = None) -> Counts:
    """Replay the offline store at ``store`` (a job's ``mlflow/`` folder) into the server's run ``run_id``."""
    from mlflow import MlflowClient

    from operators.tracking.offline import DATABASE, tracking_uri

    if not (store / DATABASE).is_file():
        raise ReplayError(f"{store}: no offline MLflow store ({DATABASE} missing): did the job log anything?")
    local = MlflowClient(tracking_uri(store))
    local_run = offline_run(local, store)
    counts, central_run = Counts(), central.get_run(run_id)
    replay_params(local_run, central, central_run, counts, store)
    replay_metrics(local, local_run, central, run_id, counts)
    recorded_root = local.get_experiment(local_run.info.experiment_id).artifact_location
    found = partial(in_store, recorded_root=recorded_root, store=store)
    replay_artifacts(local_run, central, run_id, counts, found)
    replay_models(local, local_run, central, central_run, counts, found)
    # tags last: their presence says the replay got this far
    replay_tags(local_run, central, central_run, counts, extra_tags or {})
    return counts
