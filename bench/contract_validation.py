"""Data contract validation of a 10M-row, 20-column parquet file: our bounded-memory engine next to GX's defaults.

Goal (issue): ``operators.contracts.engine.validate_file`` checks 10,000,000 rows x 20 columns against a
30-rule contract in <= 20 s with a peak RSS below 2.5 GiB (2560 MiB), on the machine it runs on.

The data is synthetic sensor readings written once with a fixed seed (pyarrow, row groups of 1M rows) and
cached under ``${FACTORY_STATE:-/var/lib/aifactory}/bench/``, keyed by row count, seed and generator version:
an int64 id (unique), a timestamp (the last 30 days before generation), ten float64 / float32 measurements
(one with 1 % nulls), int64 / int32 / int8 categories and counters, a string category (8 values) and a bool.

The contract (written to a temp dir as ``bench_sensors.yaml``, ``format: parquet``) has exactly 30 rules as
the engine counts them (``summary["counts"]["rules"]``): the row count; existence and type of 7 columns;
nullability of 6; ranges, allowed values, a pattern on the string column, uniqueness of the id, freshness
(``max_age``, set from the data's generation time so it keeps passing), a mean, three quantiles (one rule)
and a drift rule against a baseline histogram made by the engine's own ``profiles()`` from the first row
group. Every column costs two rules (existence, type), so 30 rules cannot cover all 20 columns: the contract
names 7 and allows the other 13 (``extra_columns: allow``); the engine still reads all 20. All rules pass.

Each side runs in a fresh process of the job-runtime venv (where the Slurm validation job runs); the clock
starts after ``import great_expectations`` (reported apart as ``import_s``), and peak RSS is the child's
``ru_maxrss`` from ``wait4`` (the whole process: interpreter, GX and the data):

- ours: ``validate_file(path, contract, where, baseline)``, wall seconds, rows/s, chunks;
- baseline: GX with its defaults on the whole DataFrame: ``pd.read_parquet`` of the file, then the same 30
  compiled expectations in one ``ExpectationSuite`` through a ``ValidationDefinition`` and a ``Checkpoint``
  (GX's default result format), batch = the whole DataFrame; seconds of load + validate and of validate
  alone. Running out of memory (killed) or taking longer than 10 min is its result, not an error. Two
  adjustments keep its result right, as the engine's is: text columns become object after loading (GX 1.24
  takes pandas 3's ``str`` dtype for no type list), and results are made JSON-safe before GX stores them
  (``json_safe_results``: a GX bug with numpy 2 otherwise fails every Checkpoint with a quantile rule).

The JSON names the engine measured (``engine_version``: git HEAD, ``+dirty`` and a digest of
``operators/contracts/*.py`` as on disk), since figures only compare between runs of the same engine.

Fails (exit 1) only on a wrong result: our status not ``passed``, a rule count other than 30, a row count
other than the file's, or the baseline finishing with a failed expectation. A missed goal is reported
(``goal_met``), not failed. Prints a table on stderr and one JSON line on stdout.

Knobs: BENCH_ROWS (10000000), BENCH_CHUNK_ROWS (the contract's chunk_rows, 1000000), BENCH_BASELINE (1;
0 skips the baseline), BENCH_PROFILE (0; 1 runs ours under cProfile and prints the top entries: slower).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("FACTORY_STATE") or "/var/lib/aifactory")
CACHE = STATE / "bench"
JOB_PYTHON = STATE / "venvs" / "job-runtime" / "bin" / "python"
ROWS = int(os.environ.get("BENCH_ROWS", "10000000"))
CHUNK_ROWS = int(os.environ.get("BENCH_CHUNK_ROWS", "1000000"))
RUN_BASELINE = os.environ.get("BENCH_BASELINE", "1") != "0"
PROFILE = os.environ.get("BENCH_PROFILE", "0") == "1"
SEED = 20_260_101
GENERATOR = 1  # bump when the generated data changes: part of the cache key
ROW_GROUP_ROWS = 1_000_000
SAMPLE_ROWS = 1_000_000
COLUMNS = 20
RULES = 30
DATASET = "bench_sensors"
GOAL_ROWS = 10_000_000
GOAL_S = 20.0
GOAL_RSS_MB = 2560.0  # 2.5 GiB, in MiB like every *_mb figure here
OURS_TIMEOUT_S = 1800
BASELINE_TIMEOUT_S = 600
SITES = [f"plant-{number:02d}" for number in range(1, 9)]
PROFILE_LINES = 35


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the data, generated once and cached
def row_group(index: int, offset: int, rows: int, anchor_us: int) -> Any:
    """One row group of the synthetic sensor data: a pyarrow Table, reproducible from the seed and index."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng([SEED, index])
    voltage, current = rng.normal(230.0, 2.0, rows), rng.lognormal(1.0, 0.5, rows)
    site_codes = pa.array(rng.integers(0, len(SITES), rows, dtype=np.int32))
    return pa.table({
        "id": pa.array(np.arange(offset + 1, offset + rows + 1, dtype=np.int64)),
        "recorded_at": pa.array(anchor_us - rng.integers(0, 30 * 86_400 * 10**6, rows), pa.timestamp("us")),
        "temperature": rng.normal(20.0, 5.0, rows),
        "pressure": rng.normal(1013.25, 8.0, rows),
        "humidity": pa.array(rng.uniform(0.0, 100.0, rows), mask=rng.random(rows) < 0.01),
        "voltage": voltage,
        "current": current,
        "power": voltage * current,
        "vibration": rng.exponential(0.2, rows),
        "latitude": rng.uniform(35.0, 70.0, rows),
        "longitude": rng.uniform(-10.0, 30.0, rows),
        "sensor_type": rng.integers(0, 10, rows, dtype=np.int64),
        "region": rng.integers(1, 6, rows, dtype=np.int32),
        "status": rng.choice(np.array([0, 1, 2, 3], dtype=np.int8), rows, p=[0.9, 0.06, 0.03, 0.01]),
        "batch": ((offset + np.arange(rows)) // 10_000).astype(np.int32),
        "readings": rng.poisson(12.0, rows).astype(np.int64),
        "site": pa.DictionaryArray.from_arrays(site_codes, pa.array(SITES)).dictionary_decode(),
        "is_valid": rng.random(rows) < 0.97,
        "quality": rng.beta(5.0, 2.0, rows).astype(np.float32),
        "error_rate": rng.gamma(2.0, 0.01, rows),
    })


def dataset(rows: int) -> tuple[Path, dict[str, Any]]:
    """The cached parquet file for ``rows`` rows and its metadata (generation time); built if missing."""
    import pyarrow.parquet as pq

    stem = f"contract_validation_{rows}r_{COLUMNS}c_seed{SEED}_g{GENERATOR}"
    path, meta_path = CACHE / f"{stem}.parquet", CACHE / f"{stem}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("rows") == rows and path.stat().st_size == meta.get("bytes"):
            log(f"contract_validation: cached data {path} ({meta['bytes'] / 2**20:.0f} MiB)")
            return path, meta
    CACHE.mkdir(parents=True, exist_ok=True)
    anchor = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    anchor_us = int((anchor - datetime(1970, 1, 1)).total_seconds()) * 10**6
    log(f"contract_validation: generating {rows:,} rows x {COLUMNS} columns into {path} (once; not measured)")
    began, partial = time.monotonic(), path.with_suffix(".parquet.partial")
    writer = None
    try:
        for index, offset in enumerate(range(0, rows, ROW_GROUP_ROWS)):
            table = row_group(index, offset, min(ROW_GROUP_ROWS, rows - offset), anchor_us)
            writer = writer or pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            del table
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:
            writer.close()
    partial.rename(path)
    meta = {"rows": rows, "columns": COLUMNS, "seed": SEED, "generator": GENERATOR,
            "anchor": anchor.isoformat(), "bytes": path.stat().st_size}
    meta_path.write_text(json.dumps(meta))
    log(f"contract_validation: generated in {time.monotonic() - began:.1f} s, {meta['bytes'] / 2**20:.0f} MiB")
    return path, meta


# ------------------------------------------------------------------ the contract: 30 rules as the engine counts
def contract_text(rows: int, chunk_rows: int, max_age: str) -> str:
    """The benchmark's contract (YAML); rule count: 1 row count + 7 existence + 7 type + 6 nullable + 9 rules."""
    return f"""\
apiVersion: aifactory/v1
kind: DataContract
dataset: {DATASET}
description: Synthetic sensor readings of bench/contract_validation.py; 7 of its 20 columns are under contract.
owner: data-stewards@aifactory.local
format: parquet
rows:
  min: {rows * 9 // 10}
  max: {rows * 11 // 10}
  description: The generator writes exactly {rows} rows.
extra_columns: allow        # 30 rules cannot name 20 columns (each costs an existence and a type rule)
columns:
  id:
    type: int
    nullable: false
    rules:
      - unique: true
        description: One row per reading.
  recorded_at:
    type: datetime
    nullable: false
    rules:
      - max_age: {max_age}
        description: The newest reading is recent (the data's generation time plus a day).
  temperature:
    type: float
    nullable: false
    rules:
      - range: {{min: -40, max: 80}}
        description: Within the sensors' operating range.
      - mean: {{min: 19.5, max: 20.5}}
        severity: warn
        description: The plants are kept at about 20 degrees.
      - drift: {{max_kl: 0.1, bins: 20}}
        severity: warn
        description: The temperature distribution stays close to the last accepted version.
  pressure:
    type: float
    nullable: false
    rules:
      - range: {{min: 900, max: 1100}}
        description: Within the barometers' range.
      - quantiles:
          - {{q: 0.05, min: 995, max: 1005}}
          - {{q: 0.5, min: 1010, max: 1016}}
          - {{q: 0.95, min: 1021, max: 1031}}
        severity: warn
        description: Sea-level pressure around 1013 hPa.
  sensor_type:
    type: int
    nullable: false
    rules:
      - allowed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        description: Ten sensor models are deployed.
  site:
    type: str
    nullable: false
    rules:
      - pattern: "plant-[0-9]{{2}}"
        description: Plant codes are plant- and two digits.
  is_valid:
    type: bool
validation:
  chunk_rows: {chunk_rows}
  sample_rows: {SAMPLE_ROWS}
"""


def write_contract(folder: Path, rows: int, chunk_rows: int, anchor: datetime) -> Path:
    """``folder/bench_sensors.yaml``; max_age is the data's age plus a day, so freshness passes on cached data."""
    age_h = math.ceil((datetime.now(UTC).replace(tzinfo=None) - anchor) / timedelta(hours=1))
    path = folder / f"{DATASET}.yaml"
    path.write_text(contract_text(rows, chunk_rows, f"{max(age_h, 0) + 24}h"))
    return path


def drift_baseline(data: Path, contract_path: Path) -> dict[str, dict[str, list[float]]]:
    """The drift rules' baseline histograms, by the engine's ``profiles()`` on the first row group."""
    import pyarrow.parquet as pq

    from operators.contracts.contract import load_contract
    from operators.contracts.engine import profiles

    contract = load_contract(contract_path)
    drifted = [name for name, column in contract.columns.items() if any(rule.drift for rule in column.rules)]
    return profiles(pq.ParquetFile(data).read_row_group(0, columns=drifted).to_pandas(), contract)


# ------------------------------------------------------------------ the parent: children, checks, report
def run_child(side: str, job: Path, timeout_s: float, workdir: Path) -> dict[str, Any]:
    """One side in a fresh job-runtime process; its JSON report with the peak RSS ``wait4`` saw."""
    out, err = workdir / f"{side}.out", workdir / f"{side}.err"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([str(JOB_PYTHON), __file__, "--child", side, str(job)], cwd=REPO, env=env,
                                stdout=stdout, stderr=stderr)
    began, deadline, timed_out = time.monotonic(), time.monotonic() + timeout_s, False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            proc.kill()  # the child this function started
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.monotonic() - began
    lines = out.read_text().strip().splitlines()
    report: dict[str, Any] = {}
    if proc.returncode == 0 and lines:
        report = json.loads(lines[-1])
    elif timed_out:
        report["outcome"] = f"timeout: stopped after {timeout_s:.0f} s"
    elif proc.returncode < 0:
        report["outcome"] = f"killed by signal {-proc.returncode}" + (
            " (out of memory: the kernel's OOM killer)" if proc.returncode == -9 else "")
    elif "MemoryError" in (tail := err.read_text()[-4000:]):
        report["outcome"] = "out of memory (MemoryError)"
    else:
        report["outcome"] = f"error: exit {proc.returncode}"
        report["stderr_tail"] = tail
    report["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    report["process_s"] = round(wall_s, 2)
    report["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    return report


def ours_problems(ours: dict[str, Any], rows: int) -> list[str]:
    """What is wrong with our engine's result: every rule must pass, 30 of them, on every row."""
    if "status" not in ours:
        return [f"our engine did not finish: {ours.get('outcome')}\n{ours.get('stderr_tail', '')}"]
    found = []
    if ours["status"] != "passed":
        found.append(f"status {ours['status']!r}, expected 'passed'; failed rules: {json.dumps(ours['failed'])}")
    if ours["rules"] != RULES:
        found.append(f"{ours['rules']} rules in summary['counts']['rules'], expected {RULES}")
    if ours["failed_error"] or ours["failed_warn"]:
        found.append(f"failed rules: {ours['failed_error']} error, {ours['failed_warn']} warn")
    if ours["skipped"]:
        found.append(f"skipped rules: {', '.join(ours['skipped'])}")
    if ours["rows"] != rows:
        found.append(f"{ours['rows']} rows counted, the file has {rows}")
    return found


def baseline_problems(base: dict[str, Any]) -> list[str]:
    """What is wrong with the baseline's result; running out of memory or time is a result, a crash is not."""
    if "stderr_tail" in base:
        return [f"the baseline's process failed ({base['outcome']}):\n{base['stderr_tail']}"]
    if "success" not in base:
        return []
    found = []
    if base["evaluated"] != RULES:
        found.append(f"baseline evaluated {base['evaluated']} expectations, expected {RULES}")
    if not base["success"]:
        found.append(f"baseline (GX on the whole frame) failed: {json.dumps(base['failed'])[:3000]}")
    return found


def side_figures(report: dict[str, Any], rows: int, seconds_key: str) -> dict[str, Any]:
    """One side's figures for the JSON line, with rows/s."""
    seconds = report.get(seconds_key)
    figures = {key: report[key] for key in report if key not in ("failed", "profile", "stderr_tail")}
    figures["rows_per_s"] = round(rows / seconds) if seconds else None
    return figures


def engine_version() -> str:
    """Git HEAD and a digest of the engine's files as they are on disk (a dirty tree is measured as it is)."""
    import hashlib

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    digest = hashlib.sha1()
    for path in sorted((REPO / "operators" / "contracts").glob("*.py")):
        digest.update(path.read_bytes())
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "operators/contracts"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return f"{head.strip() or 'unknown'}{'+dirty' if dirty else ''} contracts:{digest.hexdigest()[:10]}"


def main() -> None:
    """Data, contract and baseline histogram; both sides; checks; the table and the JSON line."""
    if not JOB_PYTHON.exists():
        raise SystemExit(f"contract_validation: no job-runtime venv at {JOB_PYTHON}: run ./factory setup")
    data, meta = dataset(ROWS)
    version = engine_version()
    log(f"contract_validation: engine {version}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-contract-"))
    try:
        contract_path = write_contract(workdir, ROWS, CHUNK_ROWS, datetime.fromisoformat(meta["anchor"]))
        job = workdir / "job.json"
        job.write_text(json.dumps({"data": str(data), "contract": str(contract_path),
                                   "baseline": drift_baseline(data, contract_path), "profile": PROFILE}))
        log(f"contract_validation: ours (validate_file, chunk_rows {CHUNK_ROWS:,}"
            f"{', under cProfile' if PROFILE else ''}) ...")
        ours = run_child("ours", job, OURS_TIMEOUT_S, workdir)
        if ours.get("stderr_tail"):
            log(f"contract_validation: our engine's process failed:\n{ours['stderr_tail']}")
        if ours.get("profile"):
            log(ours["profile"])
        if RUN_BASELINE:
            log("contract_validation: baseline (GX defaults, whole DataFrame; up to "
                f"{BASELINE_TIMEOUT_S // 60} min) ...")
            base = run_child("baseline", job, BASELINE_TIMEOUT_S, workdir)
            if base.get("stderr_tail"):
                log(f"contract_validation: the baseline's process failed:\n{base['stderr_tail']}")
        else:
            base = {"outcome": "not run (BENCH_BASELINE=0)"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    found = ours_problems(ours, ROWS) + baseline_problems(base)
    now = engine_version()
    if now.split()[-1] != version.split()[-1]:  # the files' digest: a commit of the same content changes nothing
        log(f"contract_validation: the engine's files changed during the run (now {now})")
        version += f" (changed during the run, now {now})"
    ours_fig = side_figures(ours, ROWS, "seconds")
    base_fig = side_figures(base, ROWS, "seconds")
    if "validate_s" in base:
        base_fig["validate_rows_per_s"] = round(ROWS / base["validate_s"]) if base["validate_s"] else None
    goal_met = (not found and ours.get("seconds") is not None and ours["seconds"] <= GOAL_S
                and ours["peak_rss_mb"] < GOAL_RSS_MB) if ROWS == GOAL_ROWS else None  # the goal is for 10M rows
    figures = {
        "benchmark": "contract_validation",
        "ok": not found,
        "rows": ROWS,
        "columns": COLUMNS,
        "rules": ours.get("rules"),
        "file_mb": round(meta["bytes"] / 2**20, 1),
        "chunk_rows": CHUNK_ROWS,
        "ours": ours_fig,
        "baseline": base_fig,
        "speedup": (round(base["seconds"] / ours["seconds"], 1)
                    if base.get("seconds") and ours.get("seconds") else None),
        "goal": {"seconds": GOAL_S, "peak_rss_mb": GOAL_RSS_MB},
        "goal_met": goal_met,
        "profiled": PROFILE,
        "engine_version": version,
    }
    if found:
        figures["errors"] = found

    def cell(report: dict[str, Any], key: str, unit: str = "", digits: int = 2) -> str:
        value = report.get(key)
        if value is None:
            return "-"
        return f"{value:,.{digits}f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"

    log("")
    log(f"| {ROWS:,} rows x {COLUMNS} columns, {figures['rules']} rules, {figures['file_mb']} MiB parquet "
        f"| ours (validate_file) | GX defaults, whole frame |")
    log("|---|---:|---:|")
    log(f"| result | {ours.get('status', ours.get('outcome'))} | "
        f"{'passed' if base.get('success') else 'failed' if 'success' in base else base.get('outcome')} |")
    log(f"| seconds (baseline: read_parquet + validate) | {cell(ours, 'seconds')} | {cell(base, 'seconds')} |")
    log(f"| of which validate | {cell(ours, 'seconds')} | {cell(base, 'validate_s')} |")
    log(f"| rows/s | {cell(ours_fig, 'rows_per_s')} | {cell(base_fig, 'rows_per_s')} |")
    log(f"| peak RSS (MiB) | {cell(ours, 'peak_rss_mb', '', 0)} | {cell(base, 'peak_rss_mb', '', 0)} |")
    log(f"| RSS after imports (MiB) | {cell(ours, 'rss_after_import_mb', '', 0)} | "
        f"{cell(base, 'rss_after_import_mb', '', 0)} |")
    log(f"| CPU seconds (child, all) | {cell(ours, 'cpu_s')} | {cell(base, 'cpu_s')} |")
    log(f"| import great_expectations (s, not timed) | {cell(ours, 'import_s')} | {cell(base, 'import_s')} |")
    log(f"| chunks x chunk_rows / sample rows | {ours.get('chunks', '-')} x {CHUNK_ROWS:,} / "
        f"{cell(ours, 'sample_rows')} | 1 x {ROWS:,} |")
    verdict = ("wrong result" if found else f"n/a at {ROWS:,} rows" if goal_met is None
               else "met" if goal_met else "MISSED (reported, not failed)")
    log(f"| goal at {GOAL_ROWS:,} rows: <= {GOAL_S:.0f} s and < {GOAL_RSS_MB:.0f} MiB (ours) | {verdict} | |")
    if found:
        log("contract_validation: FAILED:\n" + "\n".join(found))
    print(json.dumps(figures))
    if found:
        sys.exit(1)


# ------------------------------------------------------------------ the children: one side each, fresh process
def rss_mb() -> float:
    """This process's current resident set (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child_ours(job: dict[str, Any]) -> dict[str, Any]:
    """``validate_file`` once, timed after the imports."""
    started = time.perf_counter()
    import great_expectations  # noqa: F401  (timed apart: not part of the measurement)
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from operators.contracts.contract import load_contract
    from operators.contracts.engine import validate_file
    import_s = time.perf_counter() - started
    contract, data = load_contract(Path(job["contract"])), Path(job["data"])
    where = f"{DATASET} (synthetic, {data.name})"
    rss_after_import = rss_mb()
    profiler = None
    if job["profile"]:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began = time.perf_counter()
    summary = validate_file(data, contract, where, job["baseline"])
    seconds = time.perf_counter() - began
    report = {
        "seconds": round(seconds, 3),
        "engine_seconds": summary["seconds"],
        "import_s": round(import_s, 2),
        "rss_after_import_mb": rss_after_import,
        "status": summary["status"],
        "rules": summary["counts"]["rules"],
        "failed_error": summary["counts"]["failed_error"],
        "failed_warn": summary["counts"]["failed_warn"],
        "failed": [{key: rule.get(key) for key in ("rule", "observed_value", "unexpected_count", "error",
                                                   "unexpected_examples")} for rule in summary["failed"]],
        "skipped": [rule["rule"] for rule in summary["rules"] if rule.get("skipped")],
        "rows": summary["rows"],
        "chunks": summary["chunks"],
        "chunk_rows": contract.validation.chunk_rows,
        "sample_rows": summary["sample_rows"],
        "engine_peak_rss_mb": round(summary["peak_rss_bytes"] / 2**20, 1),
    }
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).strip_dirs()
        stats.sort_stats("cumulative").print_stats(PROFILE_LINES)
        stats.sort_stats("tottime").print_stats(PROFILE_LINES)
        report["profile"] = text.getvalue()
    return report


def json_safe_results() -> None:
    """Work around a GX 1.24 bug with numpy 2: ExpectColumnQuantileValuesToBeBetween's ``success`` is a numpy
    bool, and storing the results (every ``ValidationDefinition.run``, so every Checkpoint) raises
    ``TypeError: Object of type bool is not JSON serializable``. Coerces ``success`` to bool before storing."""
    from great_expectations.data_context.store.validation_results_store import ValidationResultsStore

    store = ValidationResultsStore.store_validation_results

    def storing(self: Any, suite_validation_result: Any, **kwargs: Any) -> Any:
        for outcome in suite_validation_result.results:
            outcome.success = bool(outcome.success)
        return store(self, suite_validation_result=suite_validation_result, **kwargs)

    ValidationResultsStore.store_validation_results = storing


def child_baseline(job: dict[str, Any]) -> dict[str, Any]:
    """GX with its defaults: the whole file in one DataFrame, one suite, a ValidationDefinition and a Checkpoint."""
    started = time.perf_counter()
    import great_expectations as gx
    import pandas as pd

    from operators.contracts.contract import load_contract
    from operators.contracts.suite import compile_contract
    import_s = time.perf_counter() - started
    contract, data = load_contract(Path(job["contract"])), Path(job["data"])
    rss_after_import = rss_mb()
    json_safe_results()

    began = time.perf_counter()
    frame = pd.read_parquet(data)
    for name, column in contract.columns.items():  # as the engine does: GX 1.24 takes pandas 3's str for no type
        if column.type == "str" and name in frame and isinstance(frame[name].dtype, pd.StringDtype):
            frame[name] = frame[name].astype(object)
    loaded = time.perf_counter()
    compiled = compile_contract(contract, list(frame.columns), job["baseline"])
    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("bench").add_dataframe_asset("data").add_batch_definition_whole_dataframe(
        "whole")
    suite = context.suites.add(gx.ExpectationSuite(
        name="bench-contract", expectations=[rule.expectation for rule in compiled.rules if rule.expectation]))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="bench", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(name="bench", validation_definitions=[definition]))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    done = time.perf_counter()
    outcomes = [outcome for run in result.run_results.values() for outcome in run.results]
    failed = [{"rule": outcome.expectation_config.meta.get("rule"), "result": str(outcome.result)[:300],
               "exception": str((outcome.exception_info or {}).get("exception_message"))[:300]}
              for outcome in outcomes if not outcome.success]
    return {
        "seconds": round(done - began, 3),
        "load_s": round(loaded - began, 3),
        "validate_s": round(done - loaded, 3),
        "import_s": round(import_s, 2),
        "rss_after_import_mb": rss_after_import,
        "success": bool(result.success),
        "evaluated": len(outcomes),
        "failed": failed,
        "frame_mb": round(frame.memory_usage(deep=True).sum() / 2**20, 1),
    }


def child(side: str, job_path: Path) -> None:
    """Run one side and print its report as the last stdout line."""
    import resource

    job = json.loads(job_path.read_text())
    report = child_ours(job) if side == "ours" else child_baseline(job)
    report["child_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
