"""Fetch pinned dataset files from S3 straight into the job's folder, checking their md5 while they stream.

``python -m operators.jobs.fetch inputs.json DEST [--workers N] [--part-size 8M]`` runs on compute nodes (job-runtime
venv: boto3 and the standard library only, no Airflow), so no dataset byte passes through the Airflow worker.
``inputs.json`` is a list of items:

- ``{"name": "train.csv", "url": "s3://bucket/key", "md5": "<32 hex>"}`` (optional ``"size"``): one object, saved
  as ``DEST/<name>``; ``name`` may hold subfolders.
- ``{"name": "images", "shards": [{"url": ..., "md5": ..., "size": ...}, ...]}``: a dataset of many small files
  stored as tar shards (``operators.datasets.shards``); every shard is checked and extracted into ``DEST/<name>/``.

How: objects are cut into ranges (``--part-size``) fetched by a pool of threads (``--workers``), several objects at
a time; each object is read back in order, so its md5 is computed as the bytes arrive (no second read) and a shard is
extracted as it streams (no tar on disk). Bytes held in memory are bounded (``--memory``, default ``(workers + 2)
x part size``). A file is written under a temporary name and renamed once its md5 matched; a sharded folder is built
in a temporary folder and renamed once every shard matched. So a name under DEST is either absent or complete and
verified: a mismatch or any error removes what this run had half-written and exits 1, naming the url and both md5s.
Names and tar members must stay inside DEST (no absolute paths, no ``..``, no links pointing outside).

Credentials and endpoint come from the job's environment (``AWS_*``, incl. ``AWS_ENDPOINT_URL``), never from
arguments. Prints one line per item: bytes, seconds, MB/s (MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import posixpath
import re
import shutil
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from operators.jobs.s3_stream import (
    PART_SIZE,
    WORKERS,
    Cancelled,
    Downloader,
    FetchError,
    OrderedStream,
    S3Object,
    make_client,
)
from operators.units import size_bytes

MD5 = re.compile(r"[0-9a-f]{32}")



def parse_size(text: str | int) -> int:
    """A positive size as people write it (``8M``, ``256MiB``, ``1G``, ``4096``) → bytes."""
    size = size_bytes(text, whole=True)
    if size <= 0:
        raise ValueError(f"not a size: {text!r} (e.g. 8M, 256M, 1G or a byte count)")
    return size


def relative_name(name: object, what: str) -> PurePosixPath:
    """A name as a path that stays inside its root: refuses absolute paths, ``..``, empty and odd names."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise FetchError(f"{what}: {name!r} is not a usable relative name")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts == (".",):
        raise FetchError(f"{what}: {name!r} must be a relative path without '..'")
    return PurePosixPath(*[part for part in path.parts if part != "."])


# ------------------------------------------------------------------ the inputs, checked before anything is fetched
@dataclass
class Item:
    """One entry of inputs.json: a file (one object) or a sharded folder (its shards)."""

    name: PurePosixPath
    objects: list[S3Object]
    sharded: bool
    started: float | None = None
    bytes: int = 0
    files: int = 0
    members: dict[str, str] = field(default_factory=dict)  # sharded: extracted member → shard url (duplicates)
    lock: threading.Lock = field(default_factory=threading.Lock)


def s3_object(entry: object, where: str) -> S3Object:
    """One ``{"url", "md5", "size"?}`` entry, checked."""
    if not isinstance(entry, dict):
        raise FetchError(f"{where}: expected an object with url and md5, got {entry!r}")
    url, md5, size = entry.get("url"), entry.get("md5"), entry.get("size")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise FetchError(f"{where}: url {url!r} is not s3://bucket/key")
    if not isinstance(md5, str) or not MD5.fullmatch(md5):
        raise FetchError(f"{where} ({url}): md5 {md5!r} is not 32 lower-case hex digits")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise FetchError(f"{where} ({url}): size {size!r} is not a byte count")
    return S3Object(url, parsed.netloc, parsed.path.lstrip("/"), md5, size)


def parse_inputs(raw: object) -> list[Item]:
    """inputs.json → items; every problem is found before a byte is fetched."""
    if not isinstance(raw, list):
        raise FetchError(f"inputs: expected a list of items, got {type(raw).__name__}")
    items: list[Item] = []
    for number, entry in enumerate(raw, 1):
        where = f"inputs item {number}"
        if not isinstance(entry, dict):
            raise FetchError(f"{where}: expected an object, got {entry!r}")
        name = relative_name(entry.get("name"), f"{where} name")
        where = f"{where} ({name})"
        if "shards" in entry:
            shards = entry["shards"]
            if "url" in entry or not isinstance(shards, list) or not shards:
                raise FetchError(f"{where}: 'shards' must be a non-empty list (and no 'url' beside it)")
            items.append(
                Item(name, [s3_object(shard, f"{where} shard {i}") for i, shard in enumerate(shards, 1)], True)
            )
        else:
            items.append(Item(name, [s3_object(entry, where)], False))
    names = sorted(items, key=lambda item: item.name.parts)
    for first, second in itertools.pairwise(names):
        if second.name.parts[: len(first.name.parts)] == first.name.parts:
            raise FetchError(f"inputs: {first.name} and {second.name} overlap (the same name, or one inside the other)")
    return items


# ------------------------------------------------------------------ writing files and extracting shards safely
def temporary_sibling(final: Path, kind: str) -> Path:
    """A hidden name next to ``final`` (same file system, so the rename is atomic)."""
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fetch_file(downloader: Downloader, item: Item, destination: Path) -> None:
    """One object to a temporary name (ranges written at their offsets by the workers, md5 computed in order
    here), then renamed to its name once the md5 matched."""
    final = make_folder(destination, item.name.parent, item.name) / item.name.name
    temporary = temporary_sibling(final, "fetching")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        stream = downloader.stream(item.objects[0], sink=fd)
        try:
            stream.finish(item.name)
        finally:
            stream.close()  # waits for ranges still being written
        os.close(fd)
        fd = -1
        os.replace(temporary, final)
    except BaseException as error:
        if fd >= 0:
            os.close(fd)
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise FetchError(f"{item.objects[0].url} ({item.name}): {error}") from None
        raise
    item.bytes, item.files = stream.size, 1


def make_folder(root: Path, relative: PurePosixPath, name: object) -> Path:
    """``root/relative`` as a folder, created one level at a time; every level that exists already must resolve
    inside ``root`` (a link planted earlier cannot lead a later file, or even an empty folder, outside)."""
    real_root = os.path.realpath(root)
    current = root
    for part in relative.parts:
        current = current / part
        try:
            os.mkdir(current)
            continue
        except FileExistsError:  # there before, or made just now by another item's thread: check where it leads
            pass
        real = os.path.realpath(current)
        if real != real_root and not real.startswith(real_root + os.sep):
            raise FetchError(f"{name}: {current} leads outside {root}")
        if not os.path.isdir(current):
            raise FetchError(f"{name}: {current} exists and is not a folder")
    return current


class ShardExtractor:
    """Extracts tar members into a folder, refusing anything that would land outside it.

    tarfile only parses headers (a forward-only stream); a member's bytes go from the downloaded ranges to its file.
    Regular files, folders and links that stay inside are accepted; devices, fifos and sparse files are refused.
    """

    def __init__(self, root: Path, item: Item, stream: OrderedStream) -> None:
        self.root, self.item, self.stream, self.url = root, item, stream, stream.obj.url
        self.folders: set[PurePosixPath] = {PurePosixPath()}
        self.files: set[str] = set()

    def refuse(self, member: tarfile.TarInfo, why: str) -> FetchError:
        return FetchError(f"{self.url} ({self.item.name}): member {member.name!r} {why}; nothing was kept")

    def folder(self, relative: PurePosixPath, member: tarfile.TarInfo) -> None:
        if relative not in self.folders:
            try:
                make_folder(self.root, relative, self.url)
            except (FetchError, OSError) as error:
                raise self.refuse(member, f"cannot be placed: {error}") from None
            self.folders.add(relative)

    def extract(self) -> None:
        """Every member of the shard, in stream order."""
        tar = tarfile.TarFile(fileobj=self.stream, mode="r")  # type: ignore[arg-type]
        for member in tar:
            try:
                name = relative_name(member.name, "member")
            except FetchError:
                raise self.refuse(member, "is an absolute path or contains '..'") from None
            target = self.root / name
            if member.isdir():
                self.folder(name, member)
                continue
            key = name.as_posix()
            with self.item.lock:
                if key in self.item.members:
                    raise self.refuse(member, f"appears twice (also in {self.item.members[key]})")
                self.item.members[key] = self.url
            self.folder(name.parent, member)
            if member.isreg() and not member.issparse():
                self.stream.seek(member.offset_data)
                fd = os.open(
                    target,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                    0o755 if member.mode & 0o100 else 0o644,
                )
                try:
                    for chunk in self.stream.views(member.size):
                        write_all(fd, chunk)
                finally:
                    os.close(fd)
                if self.stream.position != member.offset_data + member.size:
                    raise tarfile.ReadError(f"unexpected end of data in {member.name!r}")
                self.files.add(key)
            elif member.issym():
                self.link(member, target, name)
            elif member.islnk():
                try:
                    linked = relative_name(member.linkname, "link")
                except FetchError:
                    raise self.refuse(member, f"is a hard link to {member.linkname!r}, outside the folder") from None
                if linked.as_posix() not in self.files:
                    raise self.refuse(
                        member, f"is a hard link to {member.linkname!r}, not to a file before it in this shard"
                    )
                os.link(self.root / linked, target, follow_symlinks=False)
            else:
                raise self.refuse(member, "is a device, fifo, sparse or other special file")
            with self.item.lock:
                self.item.files += 1

    def link(self, member: tarfile.TarInfo, target: Path, name: PurePosixPath) -> None:
        """A symbolic link is kept only when it points inside the folder, lexically and as resolved now."""
        pointed = posixpath.normpath(posixpath.join(name.parent.as_posix(), member.linkname))
        if member.linkname.startswith("/") or pointed == ".." or pointed.startswith("../"):
            raise self.refuse(member, f"links outside the folder ({member.linkname!r})")
        resolved, real_root = os.path.realpath(target.parent / member.linkname), os.path.realpath(self.root)
        if resolved != real_root and not resolved.startswith(real_root + os.sep):
            raise self.refuse(member, f"links outside the folder ({member.linkname!r} resolves to {resolved})")
        os.symlink(member.linkname, target)


def fetch_shard(downloader: Downloader, item: Item, obj: S3Object, staging: Path) -> None:
    """One shard streamed through the tar reader into the item's staging folder; its md5 checked at the end."""
    stream = downloader.stream(obj)
    try:
        try:
            ShardExtractor(staging, item, stream).extract()
        except tarfile.TarError as error:
            stream.finish(item.name)  # a corrupt download reads as a broken tar: report the md5 if it differs
            raise FetchError(f"{obj.url} ({item.name}): not a readable tar: {error}") from None
        except (FetchError, Cancelled):
            raise
        except Exception as error:  # a full disk, a name the file system refuses, an odd header: name the shard
            raise FetchError(f"{obj.url} ({item.name}): {type(error).__name__}: {error}") from None
        stream.finish(item.name)
    finally:
        stream.close()
    with item.lock:
        item.bytes += stream.size


def publish_folder(staging: Path, final: Path) -> None:
    """Move a complete staging folder to its name; a folder already there is replaced, never merged."""
    if final.is_symlink() or final.exists():
        old = temporary_sibling(final, "replaced")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    else:
        staging.rename(final)


# ------------------------------------------------------------------ the run

def fetch(
    inputs: list[dict[str, Any]],
    destination: Path,
    *,
    workers: int = WORKERS,
    part_size: int = PART_SIZE,
    memory: int | None = None,
    client: Any = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Fetch every item into ``destination``; returns per item: name, bytes, files, seconds, MB/s.

    Several objects are consumed at a time (one thread each), their ranges fetched by ``workers`` threads. On an
    error the other objects stop, everything half-written is removed, and FetchError says what failed.
    """
    items = parse_inputs(inputs)
    if workers < 1 or part_size < 1:
        raise FetchError(f"workers ({workers}) and part size ({part_size}) must be positive")
    destination.mkdir(parents=True, exist_ok=True)
    downloader = Downloader(client or make_client(workers), workers, part_size, memory or (workers + 2) * part_size)
    staging: dict[int, Path] = {}
    for index, item in enumerate(items):
        if item.sharded:
            final = make_folder(destination, item.name.parent, item.name) / item.name.name
            staging[index] = temporary_sibling(final, "fetching")
            staging[index].mkdir()
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    remaining = {index: len(item.objects) for index, item in enumerate(items)}

    def run(index: int, obj: S3Object) -> None:
        item = items[index]
        with item.lock:
            item.started = item.started or time.monotonic()
        if item.sharded:
            fetch_shard(downloader, item, obj, staging[index])
        else:
            fetch_file(downloader, item, destination)

    def finished(index: int) -> None:
        item = items[index]
        if item.sharded:
            publish_folder(staging.pop(index), destination / item.name)
        seconds = time.monotonic() - (item.started or began)
        result = {
            "name": item.name.as_posix() + ("/" if item.sharded else ""),
            "bytes": item.bytes,
            "files": item.files,
            "shards": len(item.objects) if item.sharded else 0,
            "seconds": round(seconds, 3),
            "mb_per_s": round(item.bytes / 1e6 / max(seconds, 1e-9), 1),
        }
        results.append(result)
        if report:
            report(result)

    consumers = ThreadPoolExecutor(max(2, workers), thread_name_prefix="fetch-object")
    futures = {consumers.submit(run, index, obj): index for index, item in enumerate(items) for obj in item.objects}
    error: BaseException | None = None
    try:
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for future in done:
                failure = future.exception()
                if failure is not None:
                    if error is None or isinstance(error, Cancelled):
                        error = failure
                    downloader.stop.set()
                elif error is None:
                    index = futures[future]
                    remaining[index] -= 1
                    if not remaining[index]:
                        finished(index)
    except BaseException as interrupted:  # Ctrl-C, a failed rename: stop the others, then clean up
        error = interrupted
        downloader.stop.set()
        raise
    finally:
        consumers.shutdown(wait=True, cancel_futures=True)
        downloader.pool.shutdown(wait=True, cancel_futures=True)
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
    if error is not None:
        if isinstance(error, FetchError):
            raise error
        raise FetchError(f"fetch failed: {type(error).__name__}: {error}") from error
    return results


def summary_line(result: dict[str, Any]) -> str:
    """One line per item: what, how many bytes, how long, how fast."""
    shards = f"{result['shards']} shards, {result['files']} files, " if result["shards"] else ""
    return (
        f"fetched {result['name']}: {shards}{result['bytes']} bytes in {result['seconds']} s "
        f"({result['mb_per_s']} MB/s), md5 ok"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m operators.jobs.fetch",
        description="Fetch pinned dataset objects from S3 into DEST, md5-checked.",
    )
    parser.add_argument("inputs", type=Path, help="inputs.json: a list of {name, url, md5} or {name, shards}")
    parser.add_argument("dest", type=Path, help="folder to fetch into (created)")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("FETCH_WORKERS", WORKERS)),
        help=f"threads fetching ranges (FETCH_WORKERS, default {WORKERS})",
    )
    parser.add_argument(
        "--part-size",
        type=parse_size,
        default=os.environ.get("FETCH_PART_SIZE", PART_SIZE),
        help="range size, e.g. 8M (FETCH_PART_SIZE, default 8M)",
    )
    parser.add_argument(
        "--memory",
        type=parse_size,
        default=os.environ.get("FETCH_MEMORY"),
        help="bytes of fetched ranges held at most (FETCH_MEMORY, default (workers + 2) x part size)",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        inputs = json.loads(args.inputs.read_text())
        results = fetch(
            inputs,
            args.dest,
            workers=args.workers,
            part_size=parse_size(args.part_size),
            memory=parse_size(args.memory) if args.memory else None,
            report=lambda result: print(summary_line(result), flush=True),
        )
    except (OSError, ValueError, FetchError) as error:
        print(f"fetch: {error}", file=sys.stderr)
        return 1
    total, seconds = sum(result["bytes"] for result in results), time.monotonic() - began
    print(
        f"fetched {len(results)} item(s): {total} bytes in {seconds:.3f} s ({total / 1e6 / max(seconds, 1e-9):.1f}"
        " MB/s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
