"""Dataset versions as Airflow assets: which tags are new, which revision a triggered run pins, the one
asset identity shared by the schedule, the pin task and the watcher, and the watcher on a real git
registry (a temporary one; no Airflow services)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from operators.datasets.assets import REGISTRY_ALIAS, choose_revision, dataset_asset, triggering_events
from operators.datasets.watch import (
    Watched,
    candidate_paths,
    new_tags,
    parse_ls_remote,
    state_key,
    watch_repository,
)
from operators.spec import PIPELINES_DIR, Dataset, load_spec
from stack.datasets import GIT_IDENTITY

REPO = Path(__file__).resolve().parents[2]
C1, C2, C3 = "1" * 40, "2" * 40, "3" * 40
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_STATE", "/var/lib/aifactory")


def dataset(repository: str = "file://${FACTORY_STATE}/data/dataset-registry.git") -> Dataset:
    return Dataset(name="breast_cancer", repository=repository, path="breast_cancer/train.csv",
                   revision="breast-cancer-v1", test_path="breast_cancer/test.csv")


# ------------------------------------------------------------------ which tags are new (pure)
def test_the_first_look_announces_nothing_so_old_versions_never_flood_the_pipelines() -> None:
    assert new_tags(None, {"v1": C1, "v2": C2}) == []


def test_a_tag_not_seen_before_is_new_and_seen_ones_are_not() -> None:
    assert new_tags({"v1": C1}, {"v1": C1, "v2": C2}) == [("v2", C2, None)]
    assert new_tags({"v1": C1, "v2": C2}, {"v1": C1, "v2": C2}) == []


def test_a_tag_moved_to_another_commit_is_a_new_version() -> None:
    assert new_tags({"v1": C1}, {"v1": C3}) == [("v1", C3, C1)]


def test_deleted_tags_are_not_new_and_a_tag_added_again_is() -> None:
    assert new_tags({"v1": C1, "gone": C2}, {"v1": C1}) == []
    assert new_tags({"v1": C1}, {"v1": C1, "gone": C2}) == [("gone", C2, None)]


def test_ls_remote_gives_the_commit_of_annotated_and_lightweight_tags() -> None:
    output = (f"{C1}\trefs/tags/light\n{C2}\trefs/tags/annotated\n{C3}\trefs/tags/annotated^{{}}\n"
              f"{C1}\trefs/heads/main\n")
    assert parse_ls_remote(output) == {"annotated": C3, "light": C1}


def test_a_dataset_exists_by_its_file_its_dvc_file_or_a_tracked_folder_above_it() -> None:
    assert candidate_paths("data/raw/train.csv") == ["data/raw/train.csv", "data/raw/train.csv.dvc",
                                                     "data/raw.dvc", "data.dvc"]


def test_the_state_key_is_a_safe_variable_name_per_repository() -> None:
    key = state_key("file:///var/lib/aifactory/data/dataset-registry.git")
    assert key.startswith("dataset_registry_watch.") and "/" not in key and ":" not in key
    assert key != state_key("https://example.org/other.git")


def test_one_dataset_name_with_two_paths_is_reported_as_an_asset_conflict() -> None:
    from types import SimpleNamespace

    from operators.datasets.watch import asset_conflicts

    def spec(name: str, path: str) -> Any:
        return SimpleNamespace(name=name, dataset=SimpleNamespace(name="breast_cancer", path=path))

    assert asset_conflicts([spec("a", "x/train.csv"), spec("b", "x/train.csv")]) == []
    assert asset_conflicts([spec("a", "x/train.csv"), spec("b", "y/train.csv")]) == [
        "dataset breast_cancer: x/train.csv in a; y/train.csv in b"]


# ------------------------------------------------------------------ which revision a run pins (pure)
@dataclass
class Event:
    extra: dict[str, Any]
    timestamp: datetime


def event(revision: str, minutes: int = 0, repository: str = "file:///var/lib/aifactory/data/dataset-registry.git",
          commit: str = C2) -> Event:
    return Event({"repository": repository, "revision": revision, "commit": commit}, T0 + timedelta(minutes=minutes))


def test_a_triggered_run_pins_the_newest_event_s_revision() -> None:
    choice = choose_revision(dataset(), "breast-cancer-v1", [event("v2", 0), event("v3", 5, commit=C3)])
    assert (choice.revision, choice.commit) == ("v3", C3)
    assert "newest dataset-version event" in choice.reason and "v2, not pinned" in choice.reason


def test_an_explicit_revision_parameter_beats_the_event() -> None:
    choice = choose_revision(dataset(), "breast-cancer-v2-corrupt", [event("v3")])
    assert (choice.revision, choice.commit) == ("breast-cancer-v2-corrupt", None)
    assert "run's parameter" in choice.reason


def test_without_events_the_parameter_or_the_spec_decides() -> None:
    assert choose_revision(dataset(), None, []).revision == "breast-cancer-v1"
    assert choose_revision(dataset(), "breast-cancer-v1", []).reason.startswith("the spec's dataset.revision")


def test_events_of_another_repository_with_the_same_dataset_name_are_ignored() -> None:
    choice = choose_revision(dataset(), None, [event("v9", repository="https://example.org/other.git")])
    assert choice.revision == "breast-cancer-v1" and "from this repository" in choice.reason


def airflow_event(asset_name: str, uri: str, revision: str, minutes: int) -> Any:
    """An event as the Task SDK hands it to a run (emitted through the watcher's alias)."""
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset={"name": asset_name, "uri": uri, "extra": {}},
        extra={"repository": "file:///var/lib/aifactory/data/dataset-registry.git", "revision": revision,
               "commit": C2},
        source_task_id="watch", source_dag_id="dataset_registry_watch", source_run_id="r", source_map_index=0,
        source_aliases=[{"name": REGISTRY_ALIAS.name}], timestamp=T0 + timedelta(minutes=minutes))


def test_triggering_events_are_read_by_the_dataset_s_asset_from_airflow_s_accessor() -> None:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    asset = dataset_asset(dataset())
    older, newer = airflow_event(asset.name, asset.uri, "v2", 0), airflow_event(asset.name, asset.uri, "v3", 1)
    accessor = TriggeringAssetEventsAccessor.build([older, newer, airflow_event("dataset:other", "dvc://o/p", "x", 2)])
    events = triggering_events({"triggering_asset_events": accessor}, dataset())
    assert events == [older, newer]
    assert choose_revision(dataset(), "breast-cancer-v1", events).revision == "v3"
    assert triggering_events({}, dataset()) == []  # a manual run
    assert triggering_events({"triggering_asset_events": TriggeringAssetEventsAccessor.build([])}, dataset()) == []


# ------------------------------------------------------------------ one asset identity everywhere
def test_the_schedule_and_the_pin_task_s_inlet_are_the_same_asset() -> None:
    from operators.pipeline.build import build_dag

    spec = load_spec(PIPELINES_DIR / "breast_cancer" / "pipeline.yaml")
    assert spec.schedule is not None and spec.schedule.dataset_version
    dag = build_dag(spec)
    asset = dataset_asset(spec.dataset)
    assert (asset.name, asset.uri) == ("dataset:breast_cancer", "dvc://breast_cancer/breast_cancer/train.csv")
    assert dag.get_task("pin_dataset").inlets == [asset]
    assert list(dag.timetable.asset_condition.objects) == [asset]


def test_the_watcher_dag_runs_every_few_minutes_one_run_at_a_time_through_the_alias() -> None:
    path = REPO / "dags" / "dataset_registry.py"
    module_spec = importlib.util.spec_from_file_location("dataset_registry_under_test", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    dag = module.dag
    assert dag.dag_id == "dataset_registry_watch" and dag.max_active_runs == 1 and dag.catchup is False
    assert dag.timetable.delta == timedelta(minutes=5)
    assert dag.get_task("watch").outlets == [REGISTRY_ALIAS]
    assert dag.get_task("repositories").outlets == []


# ------------------------------------------------------------------ the watcher on a real git registry
class Variables:
    """The Task SDK's Variable, JSON round trip included, over a dict."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str, default: Any = None, deserialize_json: bool = False) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any, description: str | None = None, serialize_json: bool = False) -> None:
        self.values[key] = json.dumps(value)


def git(registry: Path, *args: str, date: str = GIT_IDENTITY["GIT_COMMITTER_DATE"]) -> str:
    env = {**os.environ, **GIT_IDENTITY, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return subprocess.run(["git", "-C", str(registry), *args], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def commit(work: Path, files: dict[str, str], message: str, date: str = "2025-01-01T00:00:00+00:00") -> str:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message, date=date)
    return git(work, "rev-parse", "HEAD")


def look(watched: Watched, variables: Variables) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    events = OutletEventAccessors()
    summary = watch_repository(watched, events, variables, "2026-01-01T00:00:00+00:00")
    emitted = [(event.dest_asset_key.name, event.extra) for event in events[REGISTRY_ALIAS].asset_alias_events]
    return summary, emitted


def test_the_watcher_announces_each_new_tag_of_a_watched_dataset_once(tmp_path: Path) -> None:
    work = tmp_path / "registry"
    work.mkdir()
    git(work, "-c", "init.defaultBranch=main", "init", "-q")
    first = commit(work, {"breast_cancer/train.csv.dvc": "outs:\n- md5: a\n", "README": "x"}, "v1")
    git(work, "tag", "v1")
    url = f"file://{work}"
    watched = Watched(url, [asdict(dataset(url))])
    variables = Variables()

    summary, emitted = look(watched, variables)
    assert summary["first_look"] is True and emitted == []
    assert json.loads(variables.values[state_key(url)])["tags"] == {"v1": first}

    git(work, "tag", "-a", "-m", "same data, new name", "v1-retag", "v1")  # annotated: its commit is peeled
    second = commit(work, {"other/data.csv": "1"}, "another dataset's release", "2025-02-01T00:00:00+00:00")
    git(work, "tag", "other-v1")  # breast_cancer/train.csv.dvc still exists here: a version too
    git(work, "rm", "-q", "-r", "breast_cancer")
    git(work, "commit", "-q", "-m", "drop breast_cancer", date="2025-03-01T00:00:00+00:00")
    git(work, "tag", "no-dataset")
    summary, emitted = look(watched, variables)
    extra = {"repository": url, "commit": first, "revision": "v1-retag"}
    assert emitted == [("dataset:breast_cancer", extra),
                       ("dataset:breast_cancer", {"repository": url, "commit": second, "revision": "other-v1"})]
    assert [item["tag"] for item in summary["announced"]] == ["v1-retag", "other-v1"]  # oldest commit first
    assert summary["without_dataset"] == ["no-dataset"]

    summary, emitted = look(watched, variables)
    assert emitted == [] and summary["announced"] == []  # each version is announced once

    git(work, "tag", "-d", "v1-retag")
    summary, emitted = look(watched, variables)
    assert summary["forgotten"] == ["v1-retag"] and emitted == []
    assert "v1-retag" not in json.loads(variables.values[state_key(url)])["tags"]
    git(work, "tag", "v1-retag", "v1")
    assert [name for name, _ in look(watched, variables)[1]] == ["dataset:breast_cancer"]  # forgotten: new again


def test_an_unreachable_registry_fails_and_keeps_the_state(tmp_path: Path) -> None:
    from operators.datasets.watch import RegistryError

    url = f"file://{tmp_path}/missing.git"
    variables = Variables()
    variables.set(state_key(url), {"repository": url, "tags": {"v1": C1}})
    with pytest.raises(RegistryError, match=r"missing\.git: git ls-remote failed"):
        look(Watched(url, [asdict(dataset(url))]), variables)
    assert json.loads(variables.values[state_key(url)])["tags"] == {"v1": C1}
