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
import hashlib
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
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

MiB = 2**20
WORKERS = 8
PART_SIZE = 8 * MiB
ATTEMPTS = 4  # per range: botocore retries failed requests, not a body that breaks off while streaming
MD5 = re.compile(r"[0-9a-f]{32}")


class FetchError(RuntimeError):
    """The fetch cannot complete; the message names the item or url (and both md5s on a mismatch)."""


class Cancelled(Exception):
    """Another object failed: stop quietly, the first error is the one reported."""


def md5_of(path: Path) -> str:
    """md5 of a file on disk (the Airflow-side validation reads files this way)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def parse_size(text: str | int) -> int:
    """``8M``, ``256MiB``, ``1G``, ``4096`` → bytes (binary units): sizes are given the way humans write them."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not match or int(match[1]) <= 0:
        raise ValueError(f"not a size: {text!r} (e.g. 8M, 256M, 1G or a byte count)")
    return int(match[1]) * 1024 ** " kmgt".index(match[2].lower() or " ")


def relative_name(name: object, what: str) -> PurePosixPath:
    """A name as a path that stays inside its root: refuses absolute paths, ``..``, empty and odd names."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise FetchError(f"{what}: {name!r} is not a usable relative name")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts == (".",):
        raise FetchError(f"{what}: {name!r} must be a relative path without '..'")
    return PurePosixPath(*[part for part in path.parts if part != "."])


# ------------------------------------------------------------------ the inputs, checked before anything is fetched
@dataclass(frozen=True)
class S3Object:
    """One object to fetch: where, what its md5 must be, and its size when the pin knows it."""

    url: str
    bucket: str
    key: str
    md5: str
    size: int | None


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


# ------------------------------------------------------------------ ranged, parallel, in-order streams
class ByteBudget:
    """Bytes that downloaded-but-unconsumed ranges may hold, so memory stays bounded whatever the dataset."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.condition = threading.Condition()

    def take(self, amount: int, block: bool) -> bool:
        with self.condition:
            while self.free < amount:
                if not block:
                    return False
                self.condition.wait()
            self.free -= amount
            return True

    def give(self, amount: int) -> None:
        with self.condition:
            self.free += amount
            self.condition.notify_all()


class Downloader:
    """A pool of threads fetching byte ranges; objects are read back in order through ``stream``.

    Full-size range buffers are reused (a fresh 8 MiB buffer per range costs page faults and zeroing).
    """

    def __init__(self, client: Any, workers: int, part_size: int, memory: int) -> None:
        self.client, self.workers, self.part_size = client, workers, part_size
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="fetch-range")
        self.budget = ByteBudget(max(memory, part_size))
        self.stop = threading.Event()
        self.spare: list[bytearray] = []
        self.spare_lock = threading.Lock()

    def buffer(self, length: int) -> bytearray:
        if length == self.part_size:
            with self.spare_lock:
                if self.spare:
                    return self.spare.pop()
        return bytearray(length)

    def recycle(self, buffer: bytearray) -> None:
        if len(buffer) == self.part_size:
            with self.spare_lock:
                self.spare.append(buffer)

    def size_of(self, obj: S3Object) -> int:
        """The object's size from S3 (a HEAD) when the pin did not carry it."""
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=obj.bucket, Key=obj.key)["ContentLength"])
        except ClientError as error:
            raise FetchError(f"{obj.url}: {describe(error)}") from None

    def get_range(self, obj: S3Object, start: int, length: int, size: int, sink: int | None) -> bytearray:
        """One range, read fully into memory (and written at its offset to ``sink`` when given); retried when the
        body breaks off. Checks the object's size against the pin too."""
        buffer = self.buffer(length)
        view = memoryview(buffer)
        try:
            self._download(obj, start, length, size, view)
            written = 0
            while sink is not None and written < length:
                written += os.pwrite(sink, view[written:length], start + written)
        except OSError as error:
            raise FetchError(f"{obj.url}: writing bytes {start}-{start + length - 1}: {error}") from None
        except BaseException:
            view.release()
            self.recycle(buffer)
            raise
        view.release()
        return buffer

    def _download(self, obj: S3Object, start: int, length: int, size: int, view: memoryview) -> None:
        from botocore.exceptions import ClientError

        for attempt in range(1, ATTEMPTS + 1):
            if self.stop.is_set():
                raise Cancelled
            try:
                extra = {"Range": f"bytes={start}-{start + length - 1}"} if length else {}
                response = self.client.get_object(Bucket=obj.bucket, Key=obj.key, **extra)
                with response["Body"] as body:
                    if length and "ContentRange" not in response:
                        raise FetchError(f"{obj.url}: the server ignored the Range request")
                    total = int(response["ContentRange"].rpartition("/")[2]) if length else response["ContentLength"]
                    if total != size:
                        raise FetchError(f"{obj.url}: the object has {total} bytes, the pin says {size}")
                    done = 0
                    while done < length:
                        got = body.readinto(view[done:length])
                        if not got:
                            raise ConnectionError(f"the body ended after {done} of {length} bytes")
                        done += got
                return
            except (FetchError, Cancelled):
                raise
            except ClientError as error:
                raise FetchError(f"{obj.url}: {describe(error)}") from None
            except Exception as error:  # a broken connection or body: try this range again
                if attempt == ATTEMPTS:
                    raise FetchError(
                        f"{obj.url}: bytes {start}-{start + length - 1} failed {ATTEMPTS} times: "
                        f"{type(error).__name__}: {error}"
                    ) from None
                time.sleep(0.5 * attempt)

    def stream(self, obj: S3Object, sink: int | None = None) -> OrderedStream:
        """The object's bytes in order; with ``sink`` (a file descriptor) the ranges are also written there."""
        return OrderedStream(self, obj, obj.size if obj.size is not None else self.size_of(obj), sink)


def describe(error: Exception) -> str:
    """A botocore ClientError as 'not found (NoSuchKey)' rather than a traceback."""
    info = getattr(error, "response", {}).get("Error", {})
    code = str(info.get("Code", ""))
    what = {
        "404": "not found",
        "NoSuchKey": "not found",
        "NoSuchBucket": "no such bucket",
        "403": "access denied",
        "AccessDenied": "access denied",
    }.get(code, "S3 error")
    return f"{what} ({code}{': ' + info['Message'] if info.get('Message') else ''})"


class OrderedStream:
    """An object's bytes in order, whatever order its ranges arrive in; md5 and byte count kept on the way.

    Ranges are submitted ahead of the reader, as far as the shared byte budget allows (at least one at a time, so
    every stream progresses); a range's buffer and budget go back once the reader has moved past it, so a view
    handed out is valid until the next one is asked for.
    """

    def __init__(self, downloader: Downloader, obj: S3Object, size: int, sink: int | None) -> None:
        self.downloader, self.obj, self.size, self.sink = downloader, obj, size, sink
        self.digest = hashlib.md5(usedforsecurity=False)
        part = downloader.part_size
        self.ranges = deque((start, min(part, size - start)) for start in range(0, size, part)) or deque([(0, 0)])
        self.pending: deque[tuple[Future[bytearray], int]] = deque()
        self.current: bytearray | None = None
        self.view, self.offset, self.held, self.position = memoryview(b""), 0, 0, 0

    def _submit(self) -> None:
        block = not self.pending
        while self.ranges and len(self.pending) < self.downloader.workers + 2:
            start, length = self.ranges[0]
            if not self.downloader.budget.take(length, block):
                return
            block = False
            self.ranges.popleft()
            future = self.downloader.pool.submit(
                self.downloader.get_range, self.obj, start, length, self.size, self.sink
            )
            self.pending.append((future, length))

    def _release(self) -> None:
        """Give the current range's buffer and budget back."""
        self.view.release()
        self.view, self.offset = memoryview(b""), 0
        if self.current is not None:
            self.downloader.recycle(self.current)
            self.current = None
        if self.held:
            self.downloader.budget.give(self.held)
            self.held = 0

    def _next(self) -> bool:
        """Move to the next range; False at the end of the object."""
        self._release()
        self._submit()
        if not self.pending:
            return False
        future, self.held = self.pending.popleft()
        self.current = future.result()
        self.view = memoryview(self.current)[: self.held]
        self.digest.update(self.view)
        self._submit()
        return True

    def views(self, limit: int = 1 << 62) -> Iterator[memoryview]:
        """Up to ``limit`` of the next bytes, as views of the downloaded ranges (no copies)."""
        while limit > 0 and (self.offset < len(self.view) or self._next()):
            chunk = self.view[self.offset : self.offset + limit]
            self.offset += len(chunk)
            self.position += len(chunk)
            limit -= len(chunk)
            yield chunk

    # a forward-only file for tarfile: headers are read, member data is copied straight from the views
    def read(self, size: int = -1) -> bytes:
        return b"".join(bytes(chunk) for chunk in self.views(size if size >= 0 else 1 << 62))

    def tell(self) -> int:
        return self.position

    def seek(self, position: int, whence: int = 0) -> int:
        if whence != 0 or position < self.position:
            raise OSError("a fetched stream only seeks forward")
        for _ in self.views(position - self.position):
            pass
        return self.position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def finish(self, name: PurePosixPath) -> str:
        """Drain what the reader left (tar padding) and check the md5; returns it."""
        for _ in self.views():
            pass
        actual = self.digest.hexdigest()
        if self.position != self.size:
            raise FetchError(f"{self.obj.url} ({name}): read {self.position} bytes, expected {self.size}")
        if actual != self.obj.md5:
            raise FetchError(
                f"{self.obj.url} ({name}): md5 {actual} does not match the pinned {self.obj.md5}; nothing was kept"
            )
        return actual

    def close(self) -> None:
        """Give back the budget of ranges never read (an error stopped the reader); waits for running ones, which
        may still write to the sink."""
        self._release()
        for future, length in self.pending:
            future.cancel()
            try:
                self.downloader.recycle(future.result())
            except Exception:  # (the reader reports the first error; this range's is moot)
                pass
            finally:
                self.downloader.budget.give(length)
        self.pending.clear()


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
def make_client(workers: int) -> Any:
    """An S3 client from the job's environment, with a connection per worker."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(
            max_pool_connections=workers + 4,
            connect_timeout=10,
            read_timeout=120,
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


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
