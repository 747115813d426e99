"""A dataset as an Airflow Asset: the one place that names it, and which revision an asset-triggered run pins.

``dataset:<name>`` is what pipelines with ``schedule: {dataset_version: true}`` are scheduled on, what
``pin_dataset`` declares as its inlet (lineage) and what ``dataset_registry_watch`` emits an event on
for each new tag of the dataset registry. All three must build the very same Asset (Airflow identifies
an asset by name *and* uri), so they all call :func:`dataset_asset`. Imported at DAG parse time: no
dvc, no git, no I/O here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from airflow.sdk import Asset, AssetAlias

from operators.spec import Dataset, SpecError, repository_location

# The watcher's outlet: one alias through which it emits events on any dataset's asset. An asset
# itself as an outlet would get an event on every successful run, new version or not.
REGISTRY_ALIAS = AssetAlias(name="dataset_registry")


def dataset_asset(dataset: Dataset) -> Asset:
    """The Asset of a spec's dataset: name ``dataset:<name>``, uri ``dvc://<name>/<path>``."""
    return Asset(name=f"dataset:{dataset.name}", uri=f"dvc://{dataset.name}/{dataset.path}")


def event_extra(repository: str, revision: str, commit: str) -> dict[str, str]:
    """What a dataset-version event carries, and all ``pin_dataset`` needs to pin it."""
    return {"repository": repository, "revision": revision, "commit": commit}


class AssetEvent(Protocol):
    """What is read of an Airflow asset event (the Task SDK's ``AssetEventDagRunReference``)."""

    extra: Mapping[str, Any]
    timestamp: datetime


@dataclass(frozen=True)
class Choice:
    """The revision a run pins, the commit its event announced (if any) and why, for the task log."""

    revision: str
    commit: str | None
    reason: str


def choose_revision(dataset: Dataset, requested: str | None, events: Iterable[AssetEvent]) -> Choice:
    """The run's revision: an explicit run parameter beats the newest triggering event, which beats the spec.

    A run parameter equal to the spec's default is not explicit (an asset-triggered run gets the
    default params), so the event wins then. Events from another repository (another spec with the
    same dataset name) are ignored.
    """
    default = dataset.revision
    if requested and requested != default:
        return Choice(requested, None, f"the run's parameter revision={requested!r} (the spec says {default!r})")
    events, names = list(events), {dataset.repository}
    with contextlib.suppress(SpecError):  # events recorded before 2026-12 carry the expanded location
        names.add(repository_location(dataset.repository))
    ours = [event for event in events if event.extra.get("repository") in names and event.extra.get("revision")]
    if ours:
        newest = max(ours, key=lambda event: event.timestamp)
        revision, commit = str(newest.extra["revision"]), str(newest.extra.get("commit") or "") or None
        others = sorted({str(event.extra["revision"]) for event in ours} - {revision})
        also = f"; the run also consumed events for {', '.join(others)}, not pinned" if others else ""
        return Choice(revision, commit, f"the newest dataset-version event ({newest.timestamp.isoformat()}) "
                                        f"that triggered the run announced {revision!r} at {commit}{also}")
    return Choice(default, None, "the spec's dataset.revision (no run parameter, no dataset-version event"
                                 + (" from this repository)" if events else ")"))


def triggering_events(context: Mapping[str, Any], dataset: Dataset) -> list[AssetEvent]:
    """The events on ``dataset``'s asset that triggered this run ([] for a manual or cron run)."""
    accessor = context.get("triggering_asset_events")
    if not accessor:
        return []
    try:
        return list(accessor[dataset_asset(dataset)])
    except KeyError:
        return []
