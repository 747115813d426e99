"""Pin a dataset revision to a git commit and the md5 of each file, without downloading data."""

from __future__ import annotations

import subprocess
import tempfile
from typing import Any

from operators.spec import Dataset, expand


class DatasetError(RuntimeError):
    """A dataset revision or file cannot be resolved; the message names repository, revision, path."""


def pin_dataset(dataset: Dataset, revision: str | None = None) -> dict[str, Any]:
    """Repository + revision → commit, and for the data and its test split: md5, size and S3 URL."""
    import dvc.api
    from dvc.api import DVCFileSystem

    repository, revision = expand(dataset.repository), revision or dataset.revision
    where = f"dataset {dataset.name} ({repository} at {revision})"
    listed = subprocess.run(["git", "ls-remote", repository, revision, f"{revision}^{{}}"],
                            capture_output=True, text=True, timeout=60)
    if listed.returncode != 0 or not listed.stdout.strip():
        raise DatasetError(f"{where}: revision not found in the registry ({listed.stderr.strip() or 'no such ref'})")
    refs = dict(reversed(line.split("\t")) for line in listed.stdout.strip().splitlines())
    commit = refs.get(f"refs/tags/{revision}^{{}}") or next(iter(refs.values()))
    filesystem = DVCFileSystem(repository, rev=commit)
    files = {}
    for role, path in (("data", dataset.path), ("test", dataset.test_path)):
        try:
            info = filesystem.info(path)
        except FileNotFoundError:
            raise DatasetError(f"{where}: no file {path}") from None
        if not info.get("md5"):
            raise DatasetError(f"{where}: {path} is not tracked by DVC (no md5)")
        files[role] = {"path": path, "md5": info["md5"], "size": info.get("size"),
                       "url": dvc.api.get_url(path, repo=repository, rev=commit)}
    return {"name": dataset.name, "repository": repository, "revision": revision, "commit": commit,
            "earlier": earlier_versions(repository, commit, revision, where), **files}


def earlier_versions(repository: str, commit: str, revision: str, where: str) -> list[str]:
    """The registry's tags on the history of ``commit`` (its ancestors), without ``revision`` itself: the
    versions a drift rule may compare with. A blob-less bare clone: refs and commits only, no data."""
    with tempfile.TemporaryDirectory(prefix="dataset-history-") as tmp:
        cloned = subprocess.run(["git", "clone", "-q", "--bare", "--filter=blob:none", repository, tmp + "/r"],
                                capture_output=True, text=True, timeout=120)
        merged = subprocess.run(["git", "-C", tmp + "/r", "tag", "--merged", commit], capture_output=True, text=True,
                                timeout=60) if cloned.returncode == 0 else cloned
    if merged.returncode != 0:
        raise DatasetError(f"{where}: cannot read the registry's history: {merged.stderr.strip()}")
    return [tag for tag in merged.stdout.split() if tag != revision]
