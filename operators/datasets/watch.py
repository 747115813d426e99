"""Find new versions (git tags) in the dataset registries the pipeline specs use, without downloading data.

``dataset_registry_watch`` (``dags/dataset_registry.py``) runs :func:`check_repository` for every
repository every few minutes. Polling costs one ``git ls-remote --tags`` (refs only); only when a tag
is new does a shallow, blob-less fetch of just the new tags read their trees (which dataset paths
exist at that tag) and commit dates (the order of the events). The tags seen are the state between
runs (an Airflow Variable per repository, kept by the DAG): a repository seen for the first time is
recorded without events, so turning the watcher on never floods pipelines with old versions.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from operators.datasets.git import git, repository_operand
from operators.errors import DatasetError
from operators.spec import Dataset, Pipeline, repository_location

GIT_TIMEOUT_S = 120
STATE_PREFIX = "dataset_registry_watch."
# a task must never wait for a password that nobody types; messages in English for the task log


class RegistryError(DatasetError):
    """The registry cannot be read; the message names the repository and git's own words."""


@dataclass(frozen=True)
class Watched:
    """One repository and the datasets of the specs that read from it (an XCom between the watch tasks)."""

    repository: str
    datasets: list[dict[str, str]] = field(default_factory=list)  # Dataset fields, one per asset

    def dataset_objects(self) -> list[Dataset]:
        return [Dataset(**fields) for fields in self.datasets]


@dataclass(frozen=True)
class NewVersion:
    """A tag not seen before (or moved to another commit) and the datasets whose path exists at it."""

    tag: str
    commit: str
    datasets: list[Dataset]
    moved_from: str | None = None


def watched_repositories(specs: Iterable[Pipeline]) -> list[Watched]:
    """Each repository the specs use (as written: ``${FACTORY_STATE}`` is expanded only for git), with its
    datasets, one per asset identity."""
    by_repository: dict[str, dict[tuple[str, str], Dataset]] = {}
    for spec in specs:
        dataset = spec.dataset
        by_repository.setdefault(dataset.repository, {}).setdefault((dataset.name, dataset.path), dataset)
    return [Watched(repository, [asdict(dataset) for _, dataset in sorted(datasets.items())])
            for repository, datasets in sorted(by_repository.items())]


def asset_conflicts(specs: Iterable[Pipeline]) -> list[str]:
    """Dataset names given different paths by different specs. A name is one Airflow asset
    (``dataset:<name>``): Airflow keeps only one of two assets with the same name active, so the
    other's events would be dropped. Each such name, with its specs and paths, for the log."""
    paths: dict[str, dict[str, list[str]]] = {}
    for spec in specs:
        paths.setdefault(spec.dataset.name, {}).setdefault(spec.dataset.path, []).append(spec.name)
    return [f"dataset {name}: " + "; ".join(f"{path} in {', '.join(names)}" for path, names in sorted(by_path.items()))
            for name, by_path in sorted(paths.items()) if len(by_path) > 1]


def state_key(repository: str) -> str:
    """The Airflow Variable that holds the tags seen in ``repository`` (a URL is no safe key: hashed)."""
    return STATE_PREFIX + hashlib.sha256(repository.encode()).hexdigest()[:16]


def parse_ls_remote(output: str) -> dict[str, str]:
    """``git ls-remote --tags`` → {tag: commit}; an annotated tag's peeled line (``^{}``) gives its commit."""
    direct, peeled = {}, {}
    for line in output.splitlines():
        if not line.strip():
            continue
        sha, _, ref = line.partition("\t")
        if not ref.startswith("refs/tags/"):
            continue
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            peeled[name.removesuffix("^{}")] = sha
        else:
            direct[name] = sha
    return {name: peeled.get(name, sha) for name, sha in sorted(direct.items())}


def new_tags(seen: Mapping[str, str] | None, current: Mapping[str, str]) -> list[tuple[str, str, str | None]]:
    """(tag, commit, previous commit or None) for each tag not seen before, or seen at another commit.

    ``seen is None`` is the first look at a repository: nothing is new, its tags are only recorded.
    Tags deleted since are simply not in ``current``: the caller stores ``current``, so they are forgotten.
    """
    if seen is None:
        return []
    return [(tag, commit, seen.get(tag)) for tag, commit in sorted(current.items()) if seen.get(tag) != commit]


def candidate_paths(path: str) -> list[str]:
    """The git paths whose presence means a dataset file exists at a revision: the file itself (in git),
    its ``.dvc`` file, or the ``.dvc`` file of a folder above it (a DVC-tracked directory)."""
    pure = PurePosixPath(path)
    return [path, f"{path}.dvc", *(f"{parent}.dvc" for parent in pure.parents if str(parent) != ".")]


def _git(args: Sequence[str], where: str, git_dir: str | None = None) -> str:
    return git(args, where, RegistryError, GIT_TIMEOUT_S, git_dir)


def list_tags(repository: str) -> dict[str, str]:
    """{tag: commit} of the registry (as the spec writes it): refs only, nothing cloned."""
    location = repository_operand(repository_location(repository))
    return parse_ls_remote(_git(["ls-remote", "--tags", "--", location], f"dataset registry {repository}"))


def inspect_tags(repository: str, tags: Sequence[str], paths: Sequence[str]) -> dict[str, tuple[str, int, set[str]]]:
    """{tag: (commit, commit time, which of ``paths`` exist)} for just these tags: a shallow fetch of
    them (their commits and trees; blob-less where the server allows it, as GitHub and GitLab do, while a
    local ``file://`` registry sends its small ``.dvc`` files anyway), in a temporary bare repository."""
    where = f"dataset registry {repository}"
    with tempfile.TemporaryDirectory(prefix="dataset-watch-") as tmp:
        _git(["init", "-q", "--bare", tmp], where)
        _git(["fetch", "-q", "--depth=1", "--filter=blob:none", "--no-tags", "--",
              repository_operand(repository_location(repository)),
              *(f"+refs/tags/{tag}:refs/tags/{tag}" for tag in tags)], where, git_dir=tmp)
        found = {}
        for tag in tags:
            commit, _, when = _git(["log", "-1", "--format=%H %ct", f"refs/tags/{tag}^{{commit}}"], where,
                                   git_dir=tmp).strip().partition(" ")
            listed = _git(["ls-tree", "--name-only", "-z", commit, "--", *paths], where, git_dir=tmp)
            found[tag] = (commit, int(when or 0), {name for name in listed.split("\0") if name})
    return found


@dataclass
class Check:
    """One look at a repository: the versions to announce (oldest commit first), the tags to remember
    ({tag: commit}) and the new tags at which no watched dataset path exists (remembered, not announced)."""

    versions: list[NewVersion]
    current: dict[str, str]
    without_dataset: list[str]


def check_repository(watched: Watched, seen: Mapping[str, str] | None) -> Check:
    """Compare the registry's tags with ``seen``; read the trees of new tags only."""
    current = list_tags(watched.repository)
    fresh = new_tags(seen, current)
    if not fresh:
        return Check([], current, [])
    datasets = watched.dataset_objects()
    wanted = sorted({path for dataset in datasets for path in candidate_paths(dataset.path)})
    inspected = inspect_tags(watched.repository, [tag for tag, _, _ in fresh], wanted)
    versions, without = [], []
    for tag, _, previous in fresh:
        commit, _, present = inspected[tag]
        current[tag] = commit  # the fetched tag is the truth if it moved since ls-remote
        matching = [dataset for dataset in datasets if present & set(candidate_paths(dataset.path))]
        if matching:
            versions.append(NewVersion(tag, commit, matching, previous))
        else:
            without.append(tag)
    versions.sort(key=lambda version: (inspected[version.tag][1], version.tag))
    return Check(versions, current, without)


def state_value(repository: str, tags: Mapping[str, str], checked_at: str) -> dict[str, Any]:
    """What the Variable stores: the repository in clear (the key is a hash) and its tags."""
    return {"repository": repository, "tags": dict(sorted(tags.items())), "checked_at": checked_at}


class VariableStore(Protocol):
    """Airflow's ``Variable`` (the Task SDK's), or a dict-backed stand-in in unit tests."""

    def get(self, key: str, default: Any = ..., deserialize_json: bool = False) -> Any: ...

    def set(self, key: str, value: Any, description: str | None = None, serialize_json: bool = False) -> None: ...


def watch_repository(watched: Watched, outlet_events: Any, variables: VariableStore, now: str) -> dict[str, Any]:
    """Announce the new versions of one repository as asset events and remember its tags.

    Events are added to ``outlet_events`` through the watcher's asset alias, one per new tag and
    dataset; Airflow records them when the task succeeds. The state is written last, so a failure
    before it announces the same tags again on the next run (at least once, never silently dropped).
    """
    from operators.datasets.assets import REGISTRY_ALIAS, dataset_asset, event_extra

    key = state_key(watched.repository)
    stored = variables.get(key, default=None, deserialize_json=True)
    seen = stored.get("tags") if isinstance(stored, dict) and isinstance(stored.get("tags"), dict) else None
    if stored is not None and seen is None:
        print(f"{key}: unreadable state {stored!r}: recording the current tags again, without events")
    check = check_repository(watched, seen)
    announced = []
    for version in check.versions:
        extra = event_extra(watched.repository, version.tag, version.commit)
        assets = [dataset_asset(dataset) for dataset in version.datasets]
        for asset in assets:
            outlet_events[REGISTRY_ALIAS].add(asset, extra=extra)
        announced.append({"tag": version.tag, "commit": version.commit, "moved_from": version.moved_from,
                          "assets": [asset.name for asset in assets]})
        moved = f" (moved from {version.moved_from})" if version.moved_from else ""
        print(f"{watched.repository}: new version {version.tag} at {version.commit}{moved}: an event on "
              f"{', '.join(asset.name for asset in assets)}")
    if check.without_dataset:
        print(f"{watched.repository}: new tag(s) without a watched dataset path, no event: "
              f"{', '.join(check.without_dataset)}")
    forgotten = sorted(set(seen or {}) - set(check.current))
    if forgotten:
        print(f"{watched.repository}: tag(s) deleted since the last look, forgotten: {', '.join(forgotten)}")
    if seen is None:
        print(f"{watched.repository}: first look, {len(check.current)} tag(s) recorded without events")
    elif not announced:
        print(f"{watched.repository}: no new version ({len(check.current)} tag(s))")
    variables.set(key, state_value(watched.repository, check.current, now), serialize_json=True,
                  description=f"Tags of {watched.repository} seen by dataset_registry_watch. Deleting it makes "
                              "the next run record the tags again without events.")
    return {"repository": watched.repository, "state": key, "first_look": seen is None, "tags": len(check.current),
            "announced": announced, "without_dataset": check.without_dataset, "forgotten": forgotten}
