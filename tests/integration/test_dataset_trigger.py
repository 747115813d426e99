"""A new dataset version triggers the pipelines scheduled on it, on the real stack: a new tag in the dataset
registry → ``dataset_registry_watch`` emits an asset event on ``dataset:breast_cancer`` → a
``pipeline_breast_cancer`` run, created by that event, pins the new tag.

The tag, ``breast-cancer-v1-retag``, points at the commit of ``breast-cancer-v1``: the same data, so the
run must pin the same commit and md5, and ``retag_run`` (the run's id) lets a test compare its model with
a v1 run's. The tag is always deleted again and the watcher run once more, so it forgets the tag and the
next session announces it anew; no run is left running (``max_active_runs=1`` would block other tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stack.airflow_api import FINISHED, AirflowAPI
from stack.datasets import CLEAN_TAG, GIT_IDENTITY, REGISTRY_NAME
from stack.settings import StackPaths

DAG = "dataset_registry_watch"
PIPELINE = "pipeline_breast_cancer"
ASSET = "dataset:breast_cancer"
TAG = "breast-cancer-v1-retag"
RUN_TIMEOUT_S = 600


WRITTEN = "file://${FACTORY_STATE}/data/dataset-registry.git"  # the examples' dataset.repository


def registry() -> Path:
    return StackPaths.from_env().data / REGISTRY_NAME


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git on the registry's bare repository, with the registry's fixed identity (the tag object is reproducible)."""
    return subprocess.run(["git", f"--git-dir={registry()}", *args], capture_output=True, text=True, check=check,
                          env={**os.environ, **GIT_IDENTITY}, timeout=60)


def delete_tag() -> None:
    if git("show-ref", "--verify", "--quiet", f"refs/tags/{TAG}", check=False).returncode == 0:
        git("tag", "-d", TAG)


def v1_md5() -> str:
    """The md5 of v1's train.csv, from its .dvc file in git (what pin_dataset must report for the same commit)."""
    dvc_file = git("show", f"{CLEAN_TAG}:breast_cancer/train.csv.dvc").stdout
    return next(line.split(":", 1)[1].strip() for line in dvc_file.splitlines() if line.strip().startswith("- md5:"))


def watch(airflow: AirflowAPI, runs: list[str]) -> str:
    """One watcher run, triggered and waited for (it queues behind a scheduled one: max_active_runs=1)."""
    run_id = airflow.trigger(DAG)
    runs.append(run_id)
    run = airflow.wait_for_run(DAG, run_id, timeout_s=300)
    assert run["state"] == "success", airflow.task_states(DAG, run_id)
    return run_id


def fail_unfinished(airflow: AirflowAPI, dag_id: str, run_ids: list[str]) -> None:
    for run_id in run_ids:
        if airflow.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"] not in FINISHED:
            airflow.patch(f"/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})


def watch_result(airflow: AirflowAPI, run_id: str) -> dict[str, Any]:
    """What the run's ``watch`` task for the stack's registry returned (its map index is labelled by it)."""
    mapped = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/watch/listMapped")["task_instances"]
    (index,) = [ti["map_index"] for ti in mapped if ti.get("rendered_map_index") == WRITTEN]
    return airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/watch/xcomEntries/return_value"
                       f"?map_index={index}")["value"]


def events_of_tag(airflow: AirflowAPI, since: str) -> list[dict[str, Any]]:
    """The watcher's events on ``dataset:breast_cancer`` for the tag since ``since``.

    Airflow 3.3.2's ``/assets/events`` answers 500 while a run an event created has not started yet
    (its start_date is NULL; apache/airflow#71360, fixed by #71379): asked again until it answers.
    """
    query = urllib.parse.urlencode({"name_pattern": ASSET, "source_dag_id": DAG, "timestamp_gte": since,
                                    "order_by": "-timestamp", "limit": 100})
    deadline = time.monotonic() + 120
    while True:
        try:
            events = airflow.get(f"/assets/events?{query}")["asset_events"]
            break
        except RuntimeError as error:
            if "HTTP 500" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    return [event for event in events if event["name"] == ASSET and (event["extra"] or {}).get("revision") == TAG]


def runs_of_tag(airflow: AirflowAPI, since: str) -> list[str]:
    """The pipeline runs the tag's events created."""
    return [run["run_id"] for event in events_of_tag(airflow, since) for run in event["created_dagruns"]
            if run["dag_id"] == PIPELINE]


@pytest.fixture(scope="module")
def retag(airflow: AirflowAPI) -> Iterator[dict[str, Any]]:
    """The new tag, announced by a watcher run: {commit, md5, since, watch_run}. Deleted and forgotten after."""
    airflow.wait_for_dag(PIPELINE)
    airflow.patch(f"/dags/{PIPELINE}", {"is_paused": False})  # asset-triggered runs need an unpaused DAG
    delete_tag()  # left over by an interrupted session
    runs: list[str] = []
    since: str | None = None
    try:
        watch(airflow, runs)  # a first look records the tags without events; else it forgets a leftover tag
        since = datetime.now(UTC).isoformat()
        git("tag", "-a", "-m", "breast-cancer-v1 again: a new name for the same data", TAG, CLEAN_TAG)
        commit = git("rev-parse", f"{CLEAN_TAG}^{{commit}}").stdout.strip()
        assert git("rev-parse", f"{TAG}^{{commit}}").stdout.strip() == commit
        yield {"commit": commit, "md5": v1_md5(), "since": since, "watch_run": watch(airflow, runs)}
    finally:
        try:
            if since:  # a run the event created and no test waited for must not go on with a deleted tag
                fail_unfinished(airflow, PIPELINE, runs_of_tag(airflow, since))
        finally:
            delete_tag()
            try:
                watch(airflow, runs)  # forgets the deleted tag
            finally:
                fail_unfinished(airflow, DAG, runs)


@pytest.fixture(scope="module")
def retag_run(airflow: AirflowAPI, retag: dict[str, Any]) -> Iterator[str]:
    """The id of the pipeline run the tag's event created, finished (a reproducibility check can compare it
    with a v1 run: same commit, same md5, same training parameters)."""
    deadline, run_id = time.monotonic() + RUN_TIMEOUT_S, None
    while run_id is None:  # created once no other run of the pipeline is active (max_active_runs=1)
        created = runs_of_tag(airflow, retag["since"])
        if created:
            run_id = created[0]
        elif time.monotonic() > deadline:
            pytest.fail(f"no {PIPELINE} run created by the {TAG} event in {RUN_TIMEOUT_S} s")
        else:
            time.sleep(2)
    try:
        airflow.wait_for_run(PIPELINE, run_id, timeout_s=RUN_TIMEOUT_S)
        yield run_id
    finally:
        fail_unfinished(airflow, PIPELINE, [run_id])


def test_a_new_tag_is_an_asset_event_with_its_revision_and_commit(airflow: AirflowAPI, retag: dict[str, Any]) -> None:
    events = events_of_tag(airflow, retag["since"])
    assert len(events) == 1, f"one event for the one new tag, got {events}"
    (event,) = events
    # the repository as the spec writes it: the expanded location is only ever handed to git and DVC
    assert event["extra"] == {"repository": WRITTEN, "revision": TAG, "commit": retag["commit"]}
    assert event["source_task_id"] == "watch"
    watched = watch_result(airflow, retag["watch_run"])
    assert watched["first_look"] is False
    if watched["announced"]:  # else a scheduled run announced it in between: the event above says so
        assert watched["announced"] == [{"tag": TAG, "commit": retag["commit"], "moved_from": None,
                                         "assets": [ASSET]}]
        assert event["source_run_id"] == retag["watch_run"]


def test_the_event_runs_the_pipeline_on_the_new_tag_with_v1_s_commit_and_data(airflow: AirflowAPI,
                                                                            retag: dict[str, Any],
                                                                            retag_run: str) -> None:
    run = airflow.get(f"/dags/{PIPELINE}/dagRuns/{retag_run}")
    assert run["run_type"] == "asset_triggered"
    assert run["state"] == "success", airflow.task_states(PIPELINE, retag_run)
    pinned = airflow.get(f"/dags/{PIPELINE}/dagRuns/{retag_run}/taskInstances/pin_dataset/xcomEntries/"
                         "return_value")["value"]
    assert (pinned["revision"], pinned["commit"]) == (TAG, retag["commit"])
    assert pinned["data"]["md5"] == retag["md5"]
    assert pinned["earlier"] == [], "v1 at the same commit is the same data, not an earlier version to drift from"
    upstream = airflow.get(f"/dags/{PIPELINE}/dagRuns/{retag_run}/upstreamAssetEvents")["asset_events"]
    assert any((event["extra"] or {}).get("revision") == TAG for event in upstream)
    log = json.dumps(airflow.get(f"/dags/{PIPELINE}/dagRuns/{retag_run}/taskInstances/pin_dataset/logs/1"
                                 "?full_content=true"))
    assert f"pinning dataset breast_cancer at {TAG}: the newest dataset-version event" in log


def test_the_watcher_remembers_the_tag_in_its_variable(airflow: AirflowAPI, retag: dict[str, Any]) -> None:
    from operators.datasets.watch import state_key

    key = state_key(WRITTEN)
    state = json.loads(airflow.get(f"/variables/{key}")["value"])
    assert state["repository"] == WRITTEN
    assert state["tags"][TAG] == retag["commit"] and state["tags"][CLEAN_TAG] == retag["commit"]
