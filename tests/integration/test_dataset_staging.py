"""Staging datasets on compute nodes: the real fetch module (job-runtime python, a subprocess) against the stack's S3,
shards packed by our packer, and a real DVC-tracked folder of shards pinned by ``pin_dataset``.

Everything goes to a bucket made for this module (``staging-test-<hex>``), emptied and removed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from operators.datasets.shards import job_inputs, pack

REPO = Path(__file__).resolve().parents[2]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def s3_env(stack_info: dict[str, Any]) -> dict[str, str]:
    """What a job gets: credentials and endpoint as AWS_* variables, nothing else."""
    return {
        "AWS_ACCESS_KEY_ID": stack_info["s3"]["access_key"],
        "AWS_SECRET_ACCESS_KEY": stack_info["s3"]["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": stack_info["s3"]["endpoint_url"],
    }


@pytest.fixture(scope="module")
def s3(stack_info: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack_info["s3"]["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=stack_info["s3"]["access_key"],
        aws_secret_access_key=stack_info["s3"]["secret_key"],
        config=Config(retries={"max_attempts": 3}),
    )


@pytest.fixture(scope="module")
def bucket(s3: Any) -> Iterator[str]:
    name = f"staging-test-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for entry in page.get("Contents", []):
                s3.delete_object(Bucket=name, Key=entry["Key"])
        s3.delete_bucket(Bucket=name)


def put(s3: Any, bucket: str, key: str, data: bytes) -> dict[str, Any]:
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return {"url": f"s3://{bucket}/{key}", "md5": md5(data)}


def run_fetch(
    job_python: str, env: dict[str, str], inputs: list[dict[str, Any]], dest: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The real module, as a job runs it: job-runtime python, inputs.json in the job folder, AWS_* from the env."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    inputs_file = dest.parent / f"inputs-{uuid.uuid4().hex[:6]}.json"
    inputs_file.write_text(json.dumps(inputs))
    base = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return subprocess.run(
        [job_python, "-m", "operators.jobs.fetch", str(inputs_file), str(dest), *args],
        env={**base, **env, "PYTHONPATH": str(REPO)},
        cwd=dest.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporary names a fetch might have left (hidden .<name>.fetching-* files or folders)."""
    return [str(path) for path in root.rglob(".*")]


def make_files(root: Path, count: int) -> dict[str, bytes]:
    files = {}
    for number in range(count):
        name = f"{'cats' if number % 2 else 'dogs/big'}/img-{number:04d}.raw"
        files[name] = os.urandom(200 + 97 * number)
    files["labels.csv"] = b"name,label\n" + b"".join(f"img-{n:04d}.raw,{n % 2}\n".encode() for n in range(count))
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_files_are_fetched_in_parallel_ranges_md5_checked(s3, bucket, s3_env, job_python, tmp_path):
    big = os.urandom(5 * 2**20 + 12345)  # 6 ranges of 1 MiB
    small = {f"small/{n:02d}.txt": f"file {n}\n".encode() * (n + 1) for n in range(40)}
    inputs = [
        {"name": "nested/dir/big.bin", **put(s3, bucket, "plain/big.bin", big), "size": len(big)},
        {"name": "empty.txt", **put(s3, bucket, "plain/empty.txt", b"")},
    ]
    inputs += [{"name": name, **put(s3, bucket, f"plain/{name}", data)} for name, data in small.items()]
    dest = tmp_path / "data"
    result = run_fetch(job_python, s3_env, inputs, dest, "--part-size", "1M", "--workers", "4")
    assert result.returncode == 0, result.stderr
    assert tree(dest) == {"nested/dir/big.bin": big, "empty.txt": b"", **small}
    assert leftovers(dest) == []
    lines = result.stdout.splitlines()
    assert len(lines) == len(inputs) + 1
    assert f"fetched nested/dir/big.bin: {len(big)} bytes in " in result.stdout and "MB/s), md5 ok" in lines[0]


def test_md5_mismatch_names_url_and_both_md5s_and_keeps_nothing(s3, bucket, s3_env, job_python, tmp_path):
    data = os.urandom(3 * 2**20)
    good = {"name": "good.bin", **put(s3, bucket, "mismatch/good.bin", b"fine")}
    wrong = {"name": "sub/train.csv", **put(s3, bucket, "mismatch/train.csv", data), "md5": "f" * 32}
    dest = tmp_path / "data"
    result = run_fetch(job_python, s3_env, [good, wrong], dest, "--part-size", "1M")
    assert result.returncode == 1
    assert f"{wrong['url']} (sub/train.csv): md5 {md5(data)} does not match the pinned {'f' * 32}" in result.stderr
    assert not (dest / "sub" / "train.csv").exists()
    assert leftovers(dest) == [], "no temporary file left behind"
    assert (dest / "good.bin").read_bytes() == b"fine", "an item that was complete and verified stays"


def test_missing_object_and_wrong_size_are_reported(s3, bucket, s3_env, job_python, tmp_path):
    result = run_fetch(
        job_python, s3_env, [{"name": "x.csv", "url": f"s3://{bucket}/nope/x.csv", "md5": "0" * 32}], tmp_path / "data"
    )
    assert result.returncode == 1 and f"s3://{bucket}/nope/x.csv: not found" in result.stderr
    shard = put(s3, bucket, "size/one.tar", b"\0" * 10240)
    result = run_fetch(job_python, s3_env, [{"name": "set", "shards": [{**shard, "size": 20480}]}], tmp_path / "d2")
    assert result.returncode == 1 and "the object has 10240 bytes, the pin says 20480" in result.stderr
    assert not (tmp_path / "d2" / "set").exists() and leftovers(tmp_path / "d2") == []
    result = run_fetch(
        job_python, s3_env, [{"name": "/etc/x", "url": f"s3://{bucket}/a", "md5": "0" * 32}], tmp_path / "d3"
    )
    assert result.returncode == 1 and "must be a relative path without '..'" in result.stderr


def upload_shards(s3: Any, bucket: str, prefix: str, out: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    shards = []
    for shard in manifest["shards"]:
        s3.upload_file(str(out / shard["name"]), bucket, f"{prefix}/{shard['name']}")
        shards.append({"url": f"s3://{bucket}/{prefix}/{shard['name']}", "md5": shard["md5"], "size": shard["size"]})
    return shards


def test_sharded_dataset_round_trip(s3, bucket, s3_env, job_python, tmp_path):
    src = tmp_path / "src"
    files = make_files(src, 300)
    manifest = pack(src, tmp_path / "shards", shard_size=256 * 1024)
    assert len(manifest["shards"]) > 10
    shards = upload_shards(s3, bucket, "roundtrip", tmp_path / "shards", manifest)
    dest = tmp_path / "job" / "data"
    result = run_fetch(
        job_python, s3_env, [{"name": "images/train", "shards": shards}], dest, "--part-size", "64K", "--workers", "4"
    )
    assert result.returncode == 0, result.stderr
    assert tree(dest / "images" / "train") == files
    assert leftovers(dest) == []
    total = sum(shard["size"] for shard in shards)
    assert f"fetched images/train/: {len(shards)} shards, {len(files)} files, {total} bytes in " in result.stdout

    shards[3] = {**shards[3], "md5": "e" * 32}  # one shard's pin is wrong: the whole folder is refused
    result = run_fetch(job_python, s3_env, [{"name": "images", "shards": shards}], tmp_path / "again")
    assert result.returncode == 1
    assert (
        f"{shards[3]['url']} (images): md5 {manifest['shards'][3]['md5']} does not match the pinned "
        f"{'e' * 32}" in result.stderr
    )
    assert not (tmp_path / "again" / "images").exists() and leftovers(tmp_path / "again") == []


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (member("../escaped.txt"), "is an absolute path or contains '..'"),
        (member("/tmp/absolute.txt"), "is an absolute path or contains '..'"),
        (member("ok/../../escaped.txt"), "is an absolute path or contains '..'"),
        (member("out", tarfile.SYMTYPE, "../../.."), "links outside the folder"),
        (member("abs", tarfile.SYMTYPE, "/etc"), "links outside the folder"),
        (member("hard", tarfile.LNKTYPE, "../../../etc/passwd"), "is a hard link to"),
        (member("fifo", tarfile.FIFOTYPE), "special file"),
    ],
)
def test_shard_members_that_would_land_outside_are_refused(s3, bucket, s3_env, job_python, tmp_path, bad, message):
    data = tar_of((member("fine.txt"), b"fine"), (bad, b"evil"))
    shard = {**put(s3, bucket, f"evil/{uuid.uuid4().hex}.tar", data), "size": len(data)}
    dest = tmp_path / "job" / "data"
    result = run_fetch(job_python, s3_env, [{"name": "set", "shards": [shard]}], dest)
    assert result.returncode == 1
    assert f"{shard['url']} (set): member {bad.name!r}" in result.stderr and message in result.stderr
    assert not (dest / "set").exists() and leftovers(dest) == []
    inputs_files = [f"job/{path.name}" for path in (tmp_path / "job").glob("inputs-*.json")]
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == sorted(
        ["job", "job/data", *inputs_files]
    ), "nothing was written outside, nothing is left inside"


def test_links_inside_the_folder_are_kept(s3, bucket, s3_env, job_python, tmp_path):
    data = tar_of(
        (member("a/real.txt"), b"real"),
        (member("a/alias.txt", tarfile.SYMTYPE, "real.txt"), b""),
        (member("b/same.txt", tarfile.LNKTYPE, "a/real.txt"), b""),
    )
    shard = {**put(s3, bucket, "links/links.tar", data), "size": len(data)}
    result = run_fetch(job_python, s3_env, [{"name": "set", "shards": [shard]}], tmp_path / "data")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "data" / "set"
    assert (root / "a" / "alias.txt").is_symlink() and (root / "a" / "alias.txt").read_bytes() == b"real"
    assert (root / "b" / "same.txt").read_bytes() == b"real"


# ------------------------------------------------------------------ a real DVC-tracked folder of shards, pinned
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "staging test",
    "GIT_AUTHOR_EMAIL": "test@aifactory.local",
    "GIT_COMMITTER_NAME": "staging test",
    "GIT_COMMITTER_EMAIL": "test@aifactory.local",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def test_dvc_tracked_shards_are_pinned_and_fetched(s3, bucket, s3_env, stack_info, job_python, tmp_path):
    from operators.datasets.pin import pin_dataset
    from operators.spec import Dataset

    dvc = os.path.join(stack_info["venvs"]["orchestrator"], "bin", "dvc")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **GIT_IDENTITY,
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
    }
    push_env = {**env, **{k: v for k, v in s3_env.items() if k != "AWS_ENDPOINT_URL"}}
    work, registry = tmp_path / "work", tmp_path / "registry.git"
    work.mkdir()

    def run(*command: str, environment: dict[str, str] = env) -> None:
        done = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr or done.stdout}"

    files = make_files(tmp_path / "src", 120)
    manifest = pack(tmp_path / "src", work / "images" / "shards", shard_size=64 * 1024)
    (work / "images" / "test.csv").write_text("name,label\nx,1\n")
    run("git", "-c", "init.defaultBranch=main", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "remote", "add", "-d", "storage", f"s3://{bucket}/dvc")
    run(dvc, "remote", "modify", "storage", "endpointurl", stack_info["s3"]["endpoint_url"])
    run(dvc, "add", "images/shards", "images/test.csv")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "sharded images")
    run("git", "tag", "images-v1")
    run(dvc, "push", environment=push_env)
    run("git", "init", "-q", "--bare", str(registry))
    run("git", "push", "-q", str(registry), "main", "refs/tags/images-v1")

    dataset = Dataset(
        name="images", repository=str(registry), path="images/shards", revision="images-v1", test_path="images/test.csv"
    )
    credentials = {"access_key_id": s3_env["AWS_ACCESS_KEY_ID"], "secret_access_key": s3_env["AWS_SECRET_ACCESS_KEY"]}
    pinned = pin_dataset(dataset, remote_config=credentials)

    data = pinned["data"]
    dvc_file = (work / "images" / "shards.dvc").read_text()
    assert data["md5"].endswith(".dir") and f"md5: {data['md5']}" in dvc_file
    assert data["url"] == f"s3://{bucket}/dvc/files/md5/{data['md5'][:2]}/{data['md5'][2:]}"
    assert data["size"] == sum(path.stat().st_size for path in (work / "images" / "shards").iterdir())
    assert [(shard["path"], shard["md5"], shard["size"]) for shard in data["shards"]] == [
        (f"images/shards/{shard['name']}", shard["md5"], shard["size"]) for shard in manifest["shards"]
    ]
    for shard in data["shards"]:
        assert shard["url"] == f"s3://{bucket}/dvc/files/md5/{shard['md5'][:2]}/{shard['md5'][2:]}"
    test = pinned["test"]
    assert set(test) == {"path", "md5", "size", "url"}, "plain files keep their keys"
    assert test["md5"] == md5(b"name,label\nx,1\n") and test["size"] == 15

    inputs = job_inputs(data, "images") + job_inputs(test, "test.csv")
    result = run_fetch(job_python, s3_env, inputs, tmp_path / "job" / "data")
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "job" / "data" / "images") == files
    assert (tmp_path / "job" / "data" / "test.csv").read_text() == "name,label\nx,1\n"

    # a data contract of format shards validates the folder's manifest (a row per file), never the shards
    from operators.contracts.validate import validate_pinned

    assert data["manifest"]["path"] == "images/shards/manifest.json" and data["manifest"]["size"] > 0
    pinned["earlier"] = []
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    for rows_max, name_pattern in ((200, r"(cats|dogs/big)/img-[0-9]{4}\.raw|labels\.csv"), (200, r"cats/.*")):
        (contracts / "images.yaml").write_text(SHARDS_CONTRACT.format(rows_max=rows_max, pattern=name_pattern))
        summary = validate_pinned(pinned, contracts / "images.yaml", s3, bucket, dag_id="t", run_id=uuid.uuid4().hex)
        if name_pattern.startswith("cats"):  # the 60 dogs and labels.csv break the pattern: 61 of 121
            assert summary["status"] == "failed", summary
            [broken] = [rule for rule in summary["rules"] if not rule["success"]]
            assert broken["rule"] == "columns.path.rules.1" and broken["unexpected_count"] == 61
        else:
            assert summary["status"] == "passed" and summary["rows"] == len(files) == 121, summary
    (contracts / "images.yaml").write_text(SHARDS_CONTRACT.format(rows_max=200, pattern=".*").replace(
        "format: shards", "format: csv"))
    summary = validate_pinned(pinned, contracts / "images.yaml", s3, bucket, dag_id="t", run_id=uuid.uuid4().hex)
    assert summary["status"] == "unreadable" and "a sharded folder, but the contract's format is csv" in \
        summary["error"]


SHARDS_CONTRACT = """\
apiVersion: aifactory/v1
kind: DataContract
dataset: images
description: Labelled images, packed as shards.
owner: data-stewards@aifactory.local
format: shards
rows:
  min: 100
  max: {rows_max}
  description: Enough images to train on.
columns:
  path:
    type: str
    nullable: false
    rules:
      - unique: true
        description: One entry per file.
      - pattern: '{pattern}'
        description: Only images and the label file.
  shard:
    type: str
    nullable: false
    rules:
      - pattern: 'shard-[0-9]{{5}}\\.tar'
        description: Files live in the packer's shards.
"""
