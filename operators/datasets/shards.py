"""Datasets of many small files as tar shards: pack them, and turn a pinned dataset into fetch items.

Why: DVC and S3 pay per object (600k files: 6-8 h of ``dvc push``, dvc#7607) and a job would pay a request per
file. Packed into shards of ~256 MiB, a dataset is a few objects that ``operators.jobs.fetch`` streams and extracts
on the compute node. ``python -m operators.datasets.shards pack SRC OUT [--shard-size 256M]`` writes
``OUT/shard-00000.tar``, ... and ``OUT/manifest.json`` (which file is in which shard); ``dvc add OUT`` then tracks
the folder. Packing is deterministic: files in sorted order, fixed mtime, owner and mode, so packing the same files
again gives byte-identical shards (same md5s: DVC uploads nothing new). Only regular files are packed (symbolic
links and special files are refused, empty folders are not kept). Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from operators.errors import DatasetError
from operators.shard_manifest import MANIFEST, MANIFEST_FORMAT
from operators.units import size_bytes

MiB = 2**20
DEFAULT_SHARD_SIZE = 256 * MiB

SHARD_PATTERN = "shard-{:05d}.tar"
MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed, so a repack of the same files gives the same bytes
FILE_MODE = 0o644
COPY_SIZE = MiB


class ShardError(DatasetError, ValueError):
    """Packing cannot be done as asked; the message names the path and what to change."""


@dataclass(frozen=True)
class SourceFile:
    """A file to pack: its name in the shard (relative, '/'-separated), where it is, its size when listed."""

    name: str
    path: Path
    size: int


def parse_size(text: str | int) -> int:
    """``256M``, ``1G``, ``512KiB`` or a byte count → bytes (binary units)."""
    try:
        return size_bytes(text)
    except ValueError as error:
        raise ShardError(str(error)) from None


def source_files(src: Path) -> list[SourceFile]:
    """Every regular file under ``src``, sorted by name; links and special files are refused (a shard must hold
    what the folder holds, and a link could point anywhere)."""
    found: list[SourceFile] = []

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = f"{prefix}{entry.name}"
                try:
                    name.encode("utf-8")
                except UnicodeEncodeError:
                    raise ShardError(f"{entry.path}: the name is not valid UTF-8; rename it") from None
                if entry.is_symlink():
                    raise ShardError(
                        f"{entry.path}: a symbolic link; shards hold regular files only (copy the "
                        "target in, or remove the link)"
                    )
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), name + "/")
                elif entry.is_file(follow_symlinks=False):
                    found.append(SourceFile(name, Path(entry.path), entry.stat(follow_symlinks=False).st_size))
                else:
                    raise ShardError(f"{entry.path}: not a regular file (a device, fifo or socket)")

    walk(src, "")
    found.sort(key=lambda file: file.name)
    return found


def member_info(file: SourceFile) -> tarfile.TarInfo:
    """The tar header of a file: only name and size vary; time, owner and mode are fixed."""
    info = tarfile.TarInfo(file.name)
    info.size, info.mtime, info.mode = file.size, MTIME, FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def member_bytes(file: SourceFile) -> int:
    """Bytes the file takes in a shard: its header(s) (long or non-ASCII names add a PAX header) and padded data."""
    header = member_info(file).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return len(header) + -(-file.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def archive_bytes(members: int) -> int:
    """A shard's size with ``members`` bytes of members: two zero blocks at the end, padded to a tar record."""
    return -(-(members + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def plan(files: list[SourceFile], shard_size: int) -> list[list[SourceFile]]:
    """Files in order, cut into shards of at most ``shard_size`` bytes (a larger file gets a shard of its own)."""
    shards: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    used = 0
    for file in files:
        size = member_bytes(file)
        if current and archive_bytes(used + size) > shard_size:
            shards.append(current)
            current, used = [], 0
        current.append(file)
        used += size
    if current:
        shards.append(current)
    return shards


class HashingWriter:
    """A write-only file that keeps the md5 and position of what passed through it (no second read)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.digest, self.position = handle, hashlib.md5(usedforsecurity=False), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.handle.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position


def write_shard(files: list[SourceFile], target: Path) -> dict[str, Any]:
    """One shard; returns its size, md5, file count and content bytes."""
    with target.open("wb") as handle:
        writer = HashingWriter(handle)
        with tarfile.TarFile(
            fileobj=writer,
            mode="w",
            format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]
            copybufsize=COPY_SIZE,
        ) as tar:
            for file in files:
                with file.path.open("rb") as source:
                    tar.addfile(member_info(file), source)
                    now = os.fstat(source.fileno()).st_size
                if now != file.size:
                    raise ShardError(f"{file.path}: changed while packing ({file.size} bytes listed, {now} now)")
    return {
        "name": target.name,
        "md5": writer.digest.hexdigest(),
        "size": writer.position,
        "files": len(files),
        "bytes": sum(file.size for file in files),
    }


def pack(src: Path, out: Path, shard_size: int = DEFAULT_SHARD_SIZE, progress: Any = None) -> dict[str, Any]:
    """Pack every file under ``src`` into shards in ``out`` (new or empty); returns the manifest.

    Written into a temporary folder beside ``out`` and renamed at the end: a failed pack leaves nothing half-made.
    """
    src, out = src.resolve(), out.absolute()
    if not src.is_dir():
        raise ShardError(f"{src}: not a folder")
    if shard_size < tarfile.RECORDSIZE:
        raise ShardError(f"shard size {shard_size} is below one tar record ({tarfile.RECORDSIZE} bytes)")
    if out.resolve() == src or src in out.resolve().parents:
        raise ShardError(f"{out}: the output must not be inside the source folder {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ShardError(f"{out}: exists and is not an empty folder; shards go to a new folder (remove it first)")
    files = source_files(src)
    if not files:
        raise ShardError(f"{src}: no files to pack")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.packing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        shards, index = [], {}
        for number, members in enumerate(plan(files, shard_size)):
            shard = write_shard(members, staging / SHARD_PATTERN.format(number))
            shards.append(shard)
            index.update({file.name: shard["name"] for file in members})
            if progress:
                progress(shard)
        manifest = {
            "format": MANIFEST_FORMAT,
            "shard_size": shard_size,
            "files": len(files),
            "bytes": sum(file.size for file in files),
            "shards": shards,
            "index": index,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def shard_entries(pinned_file: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The shards of a pinned sharded folder, each checked to carry what the fetch needs."""
    for shard in pinned_file["shards"]:
        missing = [key for key in ("url", "md5", "size") if shard.get(key) is None]
        if missing:
            raise ShardError(f"{pinned_file.get('path')}: shard {shard.get('path')} has no {', '.join(missing)}")
        yield {"url": shard["url"], "md5": shard["md5"], "size": shard["size"]}


def job_inputs(pinned_file: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """A pinned role (``pin_dataset(...)["data"]`` or ``["test"]``) as items of a job's inputs.json.

    A plain file → ``[{"name", "url", "md5"}]`` (saved as ``data/<name>``); a sharded folder → ``[{"name",
    "shards": [{"url", "md5", "size"}, ...]}]`` (extracted into ``data/<name>/``).
    """
    if "shards" in pinned_file:
        shards = list(shard_entries(pinned_file))
        if not shards:
            raise ShardError(f"{pinned_file.get('path')}: a sharded folder without shards")
        return [{"name": name, "shards": shards}]
    return [{"name": name, "url": pinned_file["url"], "md5": pinned_file["md5"]}]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m operators.datasets.shards",
        description="Pack a folder of many small files into deterministic tar shards.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="pack SRC into shards and a manifest in OUT (new or empty)")
    packing.add_argument("src", type=Path, help="the folder of files to pack")
    packing.add_argument("out", type=Path, help="the folder to write shards and manifest.json into")
    packing.add_argument("--shard-size", default="256M", help="target shard size, e.g. 64M, 256M, 1G (default 256M)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        manifest = pack(
            args.src,
            args.out,
            parse_size(args.shard_size),
            progress=lambda shard: print(
                f"{shard['name']}: {shard['files']} files, {shard['size']} bytes, md5 {shard['md5']}",
                file=sys.stderr,
                flush=True,
            ),
        )
    except (ShardError, OSError) as error:
        print(f"shards: {error}", file=sys.stderr)
        return 1
    print(
        f"packed {manifest['files']} files ({manifest['bytes']} bytes) into {len(manifest['shards'])} shard(s) in "
        f"{args.out} in {time.monotonic() - began:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
