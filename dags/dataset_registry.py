"""``dataset_registry_watch``: a new dataset version (a new tag in a dataset registry) triggers the
pipelines scheduled on it (``schedule: {dataset_version: true}`` in their spec).

Every 5 minutes: **repositories** reads the pipeline specs and lists the dataset registries they use;
**watch** (one mapped task per registry, so an unreachable registry fails alone) lists the registry's
tags with ``git ls-remote --tags`` and compares them with the tags seen before (an Airflow Variable
``dataset_registry_watch.<hash>`` per registry, written as the task's last step). For each new tag
(or a tag moved to another commit) it emits an asset event on ``dataset:<name>`` for each spec'd
dataset whose path exists at that tag, with extra ``{repository, revision, commit}``; ``pin_dataset``
of the triggered run pins that revision. The first look at a registry only records its tags, so old
versions never flood the pipelines; deleted tags are forgotten. No data is downloaded.

Parsing imports no dvc and reads no spec: the specs are read when the task runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, get_current_context, task

from operators.datasets.assets import REGISTRY_ALIAS

DAG_ID = "dataset_registry_watch"
EVERY = timedelta(minutes=5)

with DAG(
    dag_id=DAG_ID,
    description="New dataset versions (registry tags) → asset events dataset:<name> → the pipelines scheduled on them",
    schedule=EVERY,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=15),
    tags=["datasets"],
    default_args={"owner": "aifactory", "retries": 0, "execution_timeout": timedelta(minutes=10)},
    doc_md=__doc__,
) as dag:

    @task
    def repositories() -> list[dict[str, Any]]:
        """The registries the specs read from, with their datasets (a bad spec is skipped, and named)."""
        import os
        from dataclasses import asdict
        from pathlib import Path

        from operators.datasets.watch import asset_conflicts, watched_repositories
        from operators.spec import PIPELINES_DIR, load_all

        specs, failed = load_all(Path(os.environ.get("FACTORY_PIPELINES_DIR") or PIPELINES_DIR))
        if failed:
            errors = [line for error in failed.values() for line in error.errors]
            print(f"{len(failed)} pipeline spec(s) with errors; their datasets are not watched:\n" + "\n".join(errors))
        for conflict in asset_conflicts(specs):
            print(f"warning: one dataset name, two assets (Airflow keeps one; rename a dataset): {conflict}")
        watched = watched_repositories(specs)
        for item in watched:
            names = ", ".join(f"{dataset['name']} ({dataset['path']})" for dataset in item.datasets)
            print(f"{item.repository}: {names}")
        return [asdict(item) for item in watched]

    @task(outlets=[REGISTRY_ALIAS], map_index_template="{{ repository }}")
    def watch(watched: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        """One registry: events for its new tags, then its tags remembered."""
        from airflow.sdk import Variable

        from operators.datasets.watch import Watched, watch_repository

        context = get_current_context()
        item = Watched(**watched)
        context["repository"] = item.repository  # type: ignore[typeddict-unknown-key]  # map_index_template
        return watch_repository(item, outlet_events, Variable, pendulum.now("UTC").isoformat())

    watch.expand(watched=repositories())
