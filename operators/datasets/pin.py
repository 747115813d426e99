"""Pin a dataset revision to a git commit and the md5 of each file, without downloading data."""

from __future__ import annotations

import re
import tempfile
from pathlib import PurePosixPath
from typing import Any

from operators.datasets.git import git, repository_operand, revision_operand
from operators.errors import DatasetError
from operators.shard_manifest import MANIFEST
from operators.spec import Dataset, repository_location


def pin_dataset(dataset: Dataset, revision: str | None = None,
                remote_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Repository + revision → commit, and for the data and its test split: md5, size and S3 URL.

    A path that is a DVC-tracked folder of ``*.tar`` shards (``operators.datasets.shards``) is pinned with the
    folder's md5 (DVC's ``.dir``), its total size and ``shards``: path, url, md5 and size of each, so a job fetches
    them from S3 itself. Listing the folder reads its small ``.dir`` object and a HEAD per shard from the DVC remote
    (metadata, no data): that needs read access to the remote, from ``remote_config`` (e.g. ``{"access_key_id",
    "secret_access_key"}``) or the ``AWS_*`` environment. Plain files need no remote access at all.
    """
    import dvc.api
    from dvc.api import DVCFileSystem

    repository, revision = dataset.repository, revision or dataset.revision
    location = repository_location(repository)  # only git and DVC see it: messages and records show repository
    where = f"dataset {dataset.name} ({repository} at {revision})"
    listed = git(["ls-remote", "--", repository_operand(location), revision_operand(revision), f"{revision}^{{}}"],
                 where, DatasetError).strip()
    if not listed:
        raise DatasetError(f"{where}: revision not found in the registry (no such ref)")
    refs = dict(reversed(line.split("\t")) for line in listed.splitlines())
    commit = refs.get(f"refs/tags/{revision}^{{}}") or next(iter(refs.values()))
    if not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", commit):
        raise DatasetError(f"{where}: the registry answered {commit!r}, not a commit id")
    filesystem = DVCFileSystem(location, rev=commit, remote_config=remote_config)
    files = {}
    for role, path in (("data", dataset.path), ("test", dataset.test_path)):
        try:
            info = filesystem.info(path)
        except FileNotFoundError:
            raise DatasetError(f"{where}: no file {path}") from None
        if not info.get("md5"):
            raise DatasetError(f"{where}: {path} is not tracked by DVC (no md5)")
        if info.get("type") == "directory":
            files[role] = _sharded_folder(filesystem, path, info, where)
            continue
        files[role] = {"path": path, "md5": info["md5"], "size": info.get("size"),
                       "url": dvc.api.get_url(path, repo=location, rev=commit, remote_config=remote_config)}
    return {"name": dataset.name, "repository": repository, "revision": revision, "commit": commit,
            "earlier": earlier_versions(location, commit, revision, where), **files}


def _sharded_folder(filesystem: Any, path: str, info: dict[str, Any], where: str) -> dict[str, Any]:
    """A DVC-tracked folder of tar shards: the folder's md5 and size, and path, url, md5 and size of each shard.

    The folder's listing comes from its ``.dir`` object; a shard's size from a HEAD of its object in the remote
    (DVC's listing has no sizes), which also proves the shard was pushed.
    """
    from dvc_data.index.index import DataIndexDirError

    try:
        entries = filesystem.ls(path, detail=True)
    except DataIndexDirError as error:
        raise DatasetError(f"{where}: cannot list the folder {path}: its DVC listing ({info['md5']}) is neither "
                           f"cached nor readable from the remote ({error}); read access to the DVC remote is needed "
                           "(S3 credentials: remote_config or AWS_*)") from None
    names = {PurePosixPath(entry["name"]).name: entry for entry in entries}
    unexpected = sorted(name + ("/" if entry["type"] == "directory" else "") for name, entry in names.items()
                        if entry["type"] == "directory" or not (name.endswith(".tar") or name == MANIFEST))
    shards = sorted(name for name in names if name.endswith(".tar"))
    if unexpected or not shards:
        raise DatasetError(f"{where}: {path} is a folder, but not one of tar shards (found "
                           f"{', '.join(unexpected) or 'no *.tar'}); pack a folder of many files with "
                           "`python -m operators.datasets.shards pack SRC OUT` and track OUT with DVC")
    repo = filesystem.repo

    def located(member: str) -> tuple[str, int | None]:
        index, entry = repo.get_data_index_entry(member)
        remote, remote_path = index.storage_map.get_remote(entry)
        try:
            size = remote.info(remote_path)["size"] if entry.meta is None or not entry.meta.isdir else None
        except FileNotFoundError:
            raise DatasetError(f"{where}: {member} is not in the DVC remote ({remote.unstrip_protocol(remote_path)}): "
                               "was it pushed (dvc push)?") from None
        return remote.unstrip_protocol(remote_path), size

    pinned_shards = []
    for name in shards:
        member = f"{path.rstrip('/')}/{name}"
        url, size = located(member)
        pinned_shards.append({"path": member, "url": url, "md5": names[name]["md5"], "size": size})
    folder = {"path": path, "md5": info["md5"], "size": info.get("size"), "url": located(path)[0],
              "shards": pinned_shards}
    if MANIFEST in names:  # what a data contract of format shards validates (operators.contracts)
        member = f"{path.rstrip('/')}/{MANIFEST}"
        url, size = located(member)
        folder["manifest"] = {"path": member, "url": url, "md5": names[MANIFEST]["md5"], "size": size}
    return folder


def earlier_versions(location: str, commit: str, revision: str, where: str) -> list[str]:
    """The registry's tags on the history of ``commit`` (its strict ancestors): the versions a drift rule may
    compare with. Tags on ``commit`` itself (``revision``, or another name for the same data) are not earlier.
    A blob-less bare clone: refs and commits only, no data."""
    with tempfile.TemporaryDirectory(prefix="dataset-history-") as tmp:
        history = f"{where}: cannot read the registry's history"
        git(["clone", "-q", "--bare", "--filter=blob:none", "--", repository_operand(location), tmp + "/r"],
            history, DatasetError, timeout_s=120)
        tags = {listing: git(["tag", listing, commit], history, DatasetError, git_dir=tmp + "/r").split()
                for listing in ("--merged", "--points-at")}
    same_commit = set(tags["--points-at"]) | {revision}
    return [tag for tag in tags["--merged"] if tag not in same_commit]
