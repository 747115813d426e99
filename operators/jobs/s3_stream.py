"""Ranged, parallel, in-order S3 streams with bounded memory: the transfer under ``operators.jobs.fetch``.

An object is cut into ranges fetched by a pool of threads; :class:`OrderedStream` hands the bytes back in order
(so a reader can hash or untar them as they arrive) while :class:`ByteBudget` caps the bytes held in memory.
boto3 and the standard library only: it runs on compute nodes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from operators.errors import DatasetError

MiB = 2**20
WORKERS = 8
PART_SIZE = 8 * MiB
ATTEMPTS = 4  # per range: botocore retries failed requests, not a body that breaks off while streaming

class FetchError(DatasetError):
    """The fetch cannot complete; the message names the item or url (and both md5s on a mismatch)."""


class Cancelled(Exception):
    """Another object failed: stop quietly, the first error is the one reported."""


@dataclass(frozen=True)
class S3Object:
    """One object to fetch: where, what its md5 must be, and its size when the pin knows it."""

    url: str
    bucket: str
    key: str
    md5: str
    size: int | None




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
