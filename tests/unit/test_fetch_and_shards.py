"""Shard packing (deterministic, manifest, refusals), fetch input checks and the orchestrator's fetch items."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from operators.datasets import shards
from operators.datasets.shards import MANIFEST, ShardError, job_inputs, pack
from operators.jobs.fetch import FetchError, parse_inputs, parse_size, relative_name

MD5 = "0" * 32


def make_tree(root: Path, count: int = 60) -> dict[str, bytes]:
    """A folder of small files in nested folders, with a long and a non-ASCII name (PAX headers)."""
    files = {}
    for number in range(count):
        name = f"{'class_a/' if number % 3 else 'class_b/deeper/'}item-{number:03d}.bin"
        files[name] = hashlib.sha256(str(number).encode()).digest() * (number + 1)
    files["ünïcödé/" + "long-" * 30 + "name.txt"] = b"a long, non-ASCII name"
    files["top.csv"] = b"a,b\n1,2\n"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_packing_is_deterministic_whatever_the_files_times_and_modes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    first = pack(src, tmp_path / "one", shard_size=20 * 1024)
    for number, path in enumerate(sorted(src.rglob("*.bin"))):
        os.utime(path, (1_000_000 + number, 1_000_000 + number))
        path.chmod(0o600 if number % 2 else 0o755)
    second = pack(src, tmp_path / "two", shard_size=20 * 1024)
    assert first == second
    assert len(first["shards"]) > 3
    for shard in first["shards"]:
        assert file_md5(tmp_path / "one" / shard["name"]) == file_md5(tmp_path / "two" / shard["name"]) == shard["md5"]
    assert (tmp_path / "one" / "manifest.json").read_bytes() == (tmp_path / "two" / "manifest.json").read_bytes()


def test_manifest_maps_every_file_to_its_shard_and_shards_respect_the_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    (src / "huge.bin").write_bytes(b"x" * 50_000)  # larger than a shard: a shard of its own
    files["huge.bin"] = b"x" * 50_000
    manifest = pack(src, tmp_path / "out", shard_size=20 * 1024)
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["files"] == len(files) and manifest["bytes"] == sum(map(len, files.values()))
    assert set(manifest["index"]) == set(files)
    assert [shard["name"] for shard in manifest["shards"]] == [
        f"shard-{n:05d}.tar" for n in range(len(manifest["shards"]))
    ]
    names = list(manifest["index"])
    assert names == sorted(names)
    for shard in manifest["shards"]:
        path = tmp_path / "out" / shard["name"]
        assert path.stat().st_size == shard["size"]
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            assert {member.name for member in members} == {
                n for n, s in manifest["index"].items() if s == shard["name"]
            }
            for member in members:
                assert (member.mtime, member.uid, member.gid, member.mode) == (shards.MTIME, 0, 0, 0o644)
                assert tar.extractfile(member).read() == files[member.name]
        if "huge.bin" not in {member.name for member in members}:
            assert shard["size"] <= 20 * 1024
        else:
            assert shard["files"] == 1


def test_pack_refuses_what_it_cannot_pack_faithfully(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    (src / "link").symlink_to(src / "top.csv")
    with pytest.raises(ShardError, match="symbolic link"):
        pack(src, tmp_path / "out")
    (src / "link").unlink()
    os.mkfifo(src / "pipe")
    with pytest.raises(ShardError, match="not a regular file"):
        pack(src, tmp_path / "out")
    (src / "pipe").unlink()
    with pytest.raises(ShardError, match="inside the source"):
        pack(src, src / "shards")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.tar").write_bytes(b"")
    with pytest.raises(ShardError, match="not an empty folder"):
        pack(src, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="no files"):
        pack(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ShardError, match="not a folder"):
        pack(src / "top.csv", tmp_path / "out")
    with pytest.raises(ShardError, match="below one tar record"):
        pack(src, tmp_path / "out", shard_size=100)
    assert not (tmp_path / "out").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")], "no half-made output left"


def test_pack_cli_reports_errors_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    assert shards.main(["pack", str(src), str(tmp_path / "out"), "--shard-size", "lots"]) == 1
    assert "not a size: 'lots'" in capsys.readouterr().err
    assert shards.main(["pack", str(src), str(tmp_path / "out"), "--shard-size", "64K"]) == 0
    assert "packed 5 files" in capsys.readouterr().out


def test_sizes_are_read_the_way_people_write_them() -> None:
    assert parse_size("256M") == parse_size("256MiB") == 256 * 2**20
    assert parse_size("1G") == 2**30 and parse_size("4096") == 4096 and parse_size("64k") == 65536
    for wrong in ("", "0", "1.5G", "-3M", "12X"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(wrong)


@pytest.mark.parametrize("name", ["/etc/passwd", "../up", "a/../../b", "", ".", "a\x00b"])
def test_fetch_refuses_names_outside_its_folder(name: str) -> None:
    with pytest.raises(FetchError):
        relative_name(name, "item")
    with pytest.raises(FetchError, match="inputs item 1"):
        parse_inputs([{"name": name, "url": "s3://b/k", "md5": MD5}])


def test_fetch_checks_every_input_before_fetching() -> None:
    assert relative_name("./a/./b.csv", "item").as_posix() == "a/b.csv"
    good = {"name": "a.csv", "url": "s3://bucket/a.csv", "md5": MD5}
    problems = {
        "not s3://bucket/key": {**good, "url": "https://host/a.csv"},
        "32 lower-case hex": {**good, "md5": "ABC"},
        "not a byte count": {**good, "size": -1},
        "non-empty list": {"name": "images", "shards": []},
        "shard 2": {"name": "images", "shards": [{"url": "s3://b/1.tar", "md5": MD5}, {"url": "s3://b/2.tar"}]},
    }
    for message, item in problems.items():
        with pytest.raises(FetchError, match=message):
            parse_inputs([good | {"name": "other.csv"}, item])
    with pytest.raises(FetchError, match="overlap"):
        parse_inputs([good, {**good, "name": "a.csv/inner"}])
    with pytest.raises(FetchError, match="overlap"):
        parse_inputs([good, good])
    items = parse_inputs([good, {"name": "images", "shards": [{"url": "s3://b/1.tar", "md5": MD5, "size": 10}]}])
    assert [item.sharded for item in items] == [False, True] and items[1].objects[0].size == 10


def test_job_inputs_for_a_plain_file_and_a_sharded_folder() -> None:
    plain = {"path": "d/train.csv", "md5": MD5, "size": 10, "url": "s3://datasets/dvc/files/md5/00/0"}
    assert job_inputs(plain, "train.csv") == [{"name": "train.csv", "url": plain["url"], "md5": MD5}]
    sharded = {
        "path": "d/images",
        "md5": MD5 + ".dir",
        "size": 30,
        "url": "s3://datasets/dvc/x.dir",
        "shards": [{"path": "d/images/shard-00000.tar", "url": "s3://datasets/dvc/a", "md5": MD5, "size": 20480}],
    }
    assert job_inputs(sharded, "images") == [
        {"name": "images", "shards": [{"url": "s3://datasets/dvc/a", "md5": MD5, "size": 20480}]}
    ]
    parse_inputs(job_inputs(sharded, "images") + job_inputs(plain, "train.csv"))  # what the job will accept
    with pytest.raises(ShardError, match="no size"):
        job_inputs({**sharded, "shards": [{**sharded["shards"][0], "size": None}]}, "images")
    with pytest.raises(ShardError, match="without shards"):
        job_inputs({**sharded, "shards": []}, "images")


def test_folders_are_never_created_through_a_link_leading_outside(tmp_path: Path) -> None:
    from operators.jobs.fetch import make_folder

    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "planted").symlink_to(outside)
    with pytest.raises(FetchError, match="leads outside"):
        make_folder(root, relative_name("planted/deeper", "item"), "item")
    assert list(outside.iterdir()) == [], "not even an empty folder outside"
    (root / "inside").symlink_to(root)
    assert make_folder(root, relative_name("inside/a/b", "item"), "item") == root / "inside" / "a" / "b"
    assert (root / "a" / "b").is_dir()
    (root / "file").write_text("x")
    with pytest.raises(FetchError, match="not a folder"):
        make_folder(root, relative_name("file/sub", "item"), "item")


SHARDS_CONTRACT = """\
apiVersion: aifactory/v1
kind: DataContract
dataset: images
description: Images as shards.
owner: data-stewards@aifactory.local
format: shards
columns:
  path: {type: str, nullable: false}
  shard: {type: str, nullable: false}
"""


def test_a_shards_contract_reads_the_manifest_as_a_row_per_file(tmp_path: Path) -> None:
    from operators.contracts.contract import ContractError, load_contract
    from operators.contracts.engine import open_chunks

    (tmp_path / "src" / "a").mkdir(parents=True)
    for name in ("a/1.raw", "a/2.raw", "b.txt"):
        (tmp_path / "src" / name).write_bytes(name.encode() * 50)
    pack(tmp_path / "src", tmp_path / "out", shard_size=10240)
    (tmp_path / "images.yaml").write_text(SHARDS_CONTRACT)
    contract = load_contract(tmp_path / "images.yaml")
    columns, chunks = open_chunks(tmp_path / "out" / MANIFEST, contract, "images")
    frame = next(chunks)
    assert columns == ["path", "shard"] and list(frame["path"]) == ["a/1.raw", "a/2.raw", "b.txt"]
    assert all(shard.startswith("shard-") for shard in frame["shard"])
    (tmp_path / "broken.json").write_text('{"format": "something else"}')
    with pytest.raises(ContractError, match="not a shard manifest"):
        open_chunks(tmp_path / "broken.json", contract, "images")
    (tmp_path / "broken.json").write_text("not json")
    with pytest.raises(ContractError, match="cannot be read as a shard manifest"):
        open_chunks(tmp_path / "broken.json", contract, "images")
