"""Dataset staging on a compute node: our fetch path next to plain boto3, for a 2 GB dataset in two shapes.

Issue: jobs fetch their dataset version straight from S3 into job scratch (no dataset byte through the Airflow
worker); datasets of many small files are stored as shards. This measures, in one run, on the stack's S3:

- (a) one 2 GB file (2,000,000,000 bytes): ``python -m operators.jobs.fetch`` (ranged parallel GETs, md5 while
  streaming, temporary name then rename) next to boto3 ``download_file`` followed by a separate md5 pass;
- (b) 20,000 files of 100,000 bytes (2 GB, 100 folders): our fetch of the dataset packed by
  ``operators.datasets.shards`` (256 MiB shards: download, md5 and extraction included) next to one boto3
  ``download_file`` per file stored as its own object, sequentially, then an md5 pass; and (``BENCH_THREADED``) the
  same per-object downloads from a pool of 8 threads.

The data is generated once with a fixed seed and cached under ``${FACTORY_STATE:-/var/lib/aifactory}/bench/
dataset_fetch/`` (the big file, the small files and their shards: ~6 GB), then uploaded to the bucket
``bench-dataset-fetch`` of the stack's S3 (objects already there with the right size are not uploaded again); the
bucket is emptied and removed at the end unless ``BENCH_KEEP_S3=1``. Each measurement is a fresh job-runtime
process (where jobs run) writing into a scratch folder under the cache, which is removed after each measurement.
Figures: process wall seconds (interpreter start and imports included, the same for both sides), MB/s (10^6 bytes
over those seconds), peak RSS (``wait4``) and CPU seconds of the process; SeaweedFS serves from the same machine,
so the client and the server share its cores.

Fails (exit 1) only on a wrong result: a fetch that did not succeed, an md5 that differs, or files missing after
extraction. Prints a table on stderr (per measurement the median round, with the range) and one JSON line on
stdout. Knobs: ``BENCH_ROUNDS`` (3: the big-file pair and our sharded fetch are repeated, interleaved; the
per-object baselines, minutes each, run in the first round only), ``BENCH_THREADED`` (1), ``BENCH_KEEP_S3`` (0);
``FETCH_WORKERS`` / ``FETCH_PART_SIZE`` reach our fetch as they would in a job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STATE = Path(os.environ.get("FACTORY_STATE") or "/var/lib/aifactory")
CACHE = STATE / "bench" / "dataset_fetch"
JOB_PYTHON = STATE / "venvs" / "job-runtime" / "bin" / "python"
BUCKET = "bench-dataset-fetch"
SEED = 20_260_301
GENERATOR = 1  # bump when the generated data changes
BIG_BYTES = 2_000_000_000
SMALL_FILES = 20_000
SMALL_BYTES = 100_000
FOLDERS = 100
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THREADED = os.environ.get("BENCH_THREADED", "1") != "0"
KEEP_S3 = os.environ.get("BENCH_KEEP_S3", "0") == "1"
TIMEOUT_S = 1800


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stack_s3() -> dict[str, str]:
    """Endpoint and keys of the running stack (its info file), as AWS_* variables for the children."""
    from stack.settings import StackPaths

    info_file = StackPaths.from_env().info_file
    if not info_file.exists():
        raise SystemExit(f"dataset_fetch: the stack is not up (no {info_file}): run ./factory stack up")
    s3 = json.loads(info_file.read_text())["s3"]
    return {
        "AWS_ACCESS_KEY_ID": s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3["endpoint_url"],
    }


def client(env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=32, retries={"max_attempts": 5, "mode": "standard"}),
    )


# ------------------------------------------------------------------ the data, generated once and cached
def small_name(number: int) -> str:
    return f"class_{number % FOLDERS:03d}/item_{number:05d}.bin"


def generate() -> dict[str, Any]:
    """The big file, the small files and their shards, with md5s; reused while the generator version holds."""
    import numpy as np

    from operators.datasets.shards import pack

    meta_file = CACHE / "meta.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("generator") == GENERATOR:
            return meta
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    log(
        f"dataset_fetch: generating {BIG_BYTES / 1e9:.0f} GB in one file and {SMALL_FILES:,} files of "
        f"{SMALL_BYTES:,} bytes under {CACHE} (once) ..."
    )
    digest = hashlib.md5(usedforsecurity=False)
    with (CACHE / "big.bin").open("wb") as handle:
        for _ in range(BIG_BYTES // 10**7):
            block = rng.bytes(10**7)
            digest.update(block)
            handle.write(block)
    small = {}
    for number in range(SMALL_FILES):
        path = CACHE / "small" / small_name(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.bytes(SMALL_BYTES)
        path.write_bytes(data)
        small[small_name(number)] = hashlib.md5(data, usedforsecurity=False).hexdigest()
    began = time.monotonic()
    manifest = pack(CACHE / "small", CACHE / "shards")
    pack_s = time.monotonic() - began
    meta = {
        "generator": GENERATOR,
        "big_md5": digest.hexdigest(),
        "small_md5": small,
        "pack_s": round(pack_s, 1),
        "shards": [{key: shard[key] for key in ("name", "md5", "size")} for shard in manifest["shards"]],
    }
    meta_file.write_text(json.dumps(meta))
    return meta


def upload(s3: Any, meta: dict[str, Any]) -> dict[str, float]:
    """Every object the measurements read, uploaded unless already there with its size."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=BUCKET)
    except ClientError:
        s3.create_bucket(Bucket=BUCKET)
    present = {
        entry["Key"]: entry["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for entry in page.get("Contents", [])
    }
    wanted = {"big/big.bin": CACHE / "big.bin"}
    wanted |= {f"shards/{shard['name']}": CACHE / "shards" / shard["name"] for shard in meta["shards"]}
    wanted |= {f"small/{name}": CACHE / "small" / name for name in meta["small_md5"]}
    missing = {key: path for key, path in wanted.items() if present.get(key) != path.stat().st_size}
    if not missing:
        return {}
    log(f"dataset_fetch: uploading {len(missing):,} objects to s3://{BUCKET}/ ...")
    began = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.upload_file(str(missing[key]), BUCKET, key), sorted(missing)))
    return {"upload_s": round(time.monotonic() - began, 1), "uploaded_objects": len(missing)}


def remove_bucket(s3: Any) -> None:
    keys = [
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for entry in page.get("Contents", [])
    ]
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda start: s3.delete_objects(
                    Bucket=BUCKET,
                    Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True},
                ),
                range(0, len(keys), 1000),
            )
        )
    s3.delete_bucket(Bucket=BUCKET)


# ------------------------------------------------------------------ one measurement: a fresh job-runtime process
def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    scratch: Path,
    files: dict[str, str] | None = None,
    stdin: str | None = None,
) -> dict[str, Any]:
    """Run ``command`` in a fresh ``scratch`` folder (after writing ``files`` there): wall seconds, and peak RSS and
    CPU seconds from ``wait4``."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for file_name, text in (files or {}).items():
        (scratch / file_name).write_text(text)
    logs = scratch.parent / f"{scratch.name}.logs"
    logs.mkdir(exist_ok=True)
    (logs / "stdin").write_text(stdin or "")
    child_env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **env, "PYTHONPATH": str(REPO)}
    with (logs / "stdin").open("rb") as given, (logs / "out").open("wb") as out, (logs / "err").open("wb") as err:
        began = time.monotonic()
        proc = subprocess.Popen(command, cwd=scratch, env=child_env, stdin=given, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = {
        "name": name,
        "exit": proc.returncode,
        "seconds": round(seconds, 2),
        "mb_per_s": round(BIG_BYTES / 1e6 / seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "stdout": (logs / "out").read_text()[-3000:],
        "stderr": (logs / "err").read_text()[-3000:],
    }
    shutil.rmtree(logs)
    log(
        f"dataset_fetch: {name}: {report['seconds']} s, {report['mb_per_s']} MB/s, peak RSS "
        f"{report['peak_rss_mb']} MiB, exit {proc.returncode}"
    )
    return report


def check_tree(root: Path, meta: dict[str, Any]) -> list[str]:
    """All 20,000 files present with their size; the md5 of every 100th compared (the fetch checked the shards)."""
    found = {path.relative_to(root).as_posix(): path for path in root.rglob("*") if path.is_file()}
    problems = []
    if set(found) != set(meta["small_md5"]):
        problems.append(f"{root}: {len(found)} files, expected {len(meta['small_md5'])}")
    for number, (name, expected) in enumerate(sorted(meta["small_md5"].items())):
        path = found.get(name)
        if path is None or path.stat().st_size != SMALL_BYTES:
            problems.append(f"{root}/{name}: missing or not {SMALL_BYTES} bytes")
        elif number % 100 == 0 and hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() != expected:
            problems.append(f"{root}/{name}: md5 differs")
    return problems[:5]


BOTO3_BIG = """
import hashlib, json, sys, time, boto3
bucket, key, target = sys.argv[1:4]
s3 = boto3.client("s3")
began = time.monotonic()
s3.download_file(bucket, key, target)
downloaded = time.monotonic()
digest = hashlib.md5(usedforsecurity=False)
with open(target, "rb") as handle:
    while chunk := handle.read(8 * 2**20):
        digest.update(chunk)
print(json.dumps({"download_s": downloaded - began, "md5_s": time.monotonic() - downloaded,
                  "md5": digest.hexdigest()}))
"""

BOTO3_SMALL = """
import hashlib, json, os, sys, time, boto3
from concurrent.futures import ThreadPoolExecutor
from botocore.config import Config
bucket, threads = sys.argv[1], int(sys.argv[2])
expected = json.load(sys.stdin)
names = sorted(expected)
s3 = boto3.client("s3", config=Config(max_pool_connections=max(10, threads)))
def get(name):
    os.makedirs(os.path.dirname(name), exist_ok=True)
    s3.download_file(bucket, "small/" + name, name)
began = time.monotonic()
if threads > 1:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, names))
else:
    for name in names:
        get(name)
downloaded = time.monotonic()
wrong = []
for name in names:
    with open(name, "rb") as handle:
        if hashlib.md5(handle.read(), usedforsecurity=False).hexdigest() != expected[name]:
            wrong.append(name)
print(json.dumps({"download_s": downloaded - began, "md5_s": time.monotonic() - downloaded, "files": len(names),
                  "wrong": wrong[:5]}))
"""


def run_round(
    meta: dict[str, Any], env: dict[str, str], scratch: Path, per_object: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every measurement once (the per-object baselines only when ``per_object``: they take minutes), each in a
    fresh scratch folder removed before the next; the reports and what was wrong."""
    python = str(JOB_PYTHON)
    problems: list[str] = []
    reports: list[dict[str, Any]] = []
    fetch = [python, "-m", "operators.jobs.fetch", "inputs.json", "data"]

    def boto3_result(report: dict[str, Any]) -> dict[str, Any]:
        try:
            result = json.loads(report["stdout"].strip().splitlines()[-1]) if report["exit"] == 0 else {}
        except (IndexError, ValueError):
            result = {}
        report.update({key: round(result[key], 2) for key in ("download_s", "md5_s") if key in result})
        return result

    # (a) one 2 GB file
    big_item = [{"name": "big.bin", "url": f"s3://{BUCKET}/big/big.bin", "md5": meta["big_md5"]}]
    report = measure("ours: fetch, one 2 GB file", fetch, env, scratch, {"inputs.json": json.dumps(big_item)})
    if report["exit"] != 0 or (scratch / "data" / "big.bin").stat().st_size != BIG_BYTES:
        problems.append(f"our fetch of the big file failed: {report['stderr']}")
    reports.append(report)
    report = measure(
        "boto3: download_file + md5 pass", [python, "-c", BOTO3_BIG, BUCKET, "big/big.bin", "big.bin"], env, scratch
    )
    if (result := boto3_result(report)).get("md5") != meta["big_md5"]:
        problems.append(f"boto3's big file has md5 {result.get('md5')}, expected {meta['big_md5']}: {report['stderr']}")
    reports.append(report)

    # (b) 20,000 files of 100 kB
    shards = [
        {"url": f"s3://{BUCKET}/shards/{shard['name']}", "md5": shard["md5"], "size": shard["size"]}
        for shard in meta["shards"]
    ]
    report = measure(
        f"ours: fetch, {len(shards)} shards, extracted",
        fetch,
        env,
        scratch,
        {"inputs.json": json.dumps([{"name": "small", "shards": shards}])},
    )
    problems += [
        f"our sharded fetch: {problem}"
        for problem in (check_tree(scratch / "data" / "small", meta) if report["exit"] == 0 else [report["stderr"]])
    ]
    reports.append(report)
    for threads in ((1, 8) if THREADED else (1,)) if per_object else ():
        label = "sequential" if threads == 1 else f"{threads} threads"
        report = measure(
            f"boto3: {SMALL_FILES:,} x download_file ({label}) + md5 pass",
            [python, "-c", BOTO3_SMALL, BUCKET, str(threads)],
            env,
            scratch,
            stdin=json.dumps(meta["small_md5"]),
        )
        result = boto3_result(report)
        if result.get("files") != SMALL_FILES or result.get("wrong") != []:
            problems.append(f"boto3 ({label}): files or md5s differ ({result.get('wrong')}): {report['stderr']}")
        reports.append(report)
    shutil.rmtree(scratch, ignore_errors=True)
    for report in reports:
        report.pop("stdout", None)
        if report["exit"] == 0:
            report.pop("stderr", None)
    return reports, problems


def main() -> None:
    if not JOB_PYTHON.exists():
        raise SystemExit(f"dataset_fetch: no job-runtime venv at {JOB_PYTHON}: run ./factory setup")
    env = stack_s3()
    meta = generate()
    s3 = client(env)
    uploaded = upload(s3, meta)
    scratch = CACHE / "scratch"
    rounds, problems = [], []
    try:
        for number in range(ROUNDS):
            log(f"dataset_fetch: round {number + 1} of {ROUNDS} ...")
            reports, found = run_round(meta, env, scratch, per_object=number == 0)
            rounds.append(reports)
            problems += found
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not KEEP_S3:
            remove_bucket(s3)
    figures = {
        "benchmark": "dataset_fetch",
        "ok": not problems,
        "bytes": BIG_BYTES,
        "small_files": SMALL_FILES,
        "small_file_bytes": SMALL_BYTES,
        "shards": len(meta["shards"]),
        "pack_s": meta["pack_s"],
        "fetch_settings": {key: os.environ[key] for key in ("FETCH_WORKERS", "FETCH_PART_SIZE") if key in os.environ},
        **uploaded,
        "rounds": rounds,
        "load_average": os.getloadavg(),
    }
    if problems:
        figures["errors"] = problems
    log("")
    log(
        f"| 2 GB ({BIG_BYTES:,} bytes); process wall time, median of {ROUNDS} (range) | seconds | MB/s | "
        "download / md5 pass (s) | peak RSS (MiB) | CPU s |"
    )
    log("|---|---:|---:|---:|---:|---:|")
    for name in dict.fromkeys(report["name"] for reports in rounds for report in reports):
        runs = [report for reports in rounds for report in reports if report["name"] == name]
        seconds = sorted(report["seconds"] for report in runs)
        middle = statistics.median_low(seconds)
        median = next(report for report in runs if report["seconds"] == middle)
        spread = f" ({seconds[0]}-{seconds[-1]})" if len(runs) > 1 else ""
        split = f"{median['download_s']} / {median['md5_s']}" if "download_s" in median else "-"
        log(
            f"| {name} | {middle}{spread} | {median['mb_per_s']} | {split} | {median.get('peak_rss_mb', '-')} | "
            f"{median.get('cpu_s', '-')} |"
        )
    if problems:
        log("dataset_fetch: FAILED:\n" + "\n".join(problems))
    print(json.dumps(figures))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
