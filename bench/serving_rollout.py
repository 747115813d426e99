"""Rollout and rollback on the stack's MLServer under a steady 50 requests/s (``BENCH_RATE``).

Two versions of the example-sized model (scikit-learn, 30 features) that answer differently, so each
request says which version answered. Version 1 is rolled out first; then, with the client sending to the
unversioned endpoint: the rollout of version 2 (load → ready → smoke → latency over 100 requests →
default), one second of traffic, a rollback to version 1 (still loaded: the grace period) and the retirement
of version 2. Prints one JSON line: seconds per step, requests sent and failed, and client latency.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from operators.serving.checks import v2_smoke_inputs
from operators.serving.load import SteadyLoad
from operators.serving.repository import ModelRepository
from operators.serving.rollout import roll_out, switch_back
from operators.serving.targets import V2Target
from operators.serving.v2 import V2Client
from operators.spec import Latency, Smoke
from stack.settings import StackPaths

REPO = Path(__file__).resolve().parents[1]
MAKE_MODEL = REPO / "tests" / "integration" / "make_sklearn_model.py"
SMOKE = Smoke(allowed_outputs=[0, 1])
LATENCY = Latency(requests=100, p99_ms=250)


def make_model(job_python: str, folder: Path, name: str, flipped: bool) -> dict:
    made = subprocess.run([job_python, str(MAKE_MODEL), str(folder), name, "0", *(["flipped"] if flipped else [])],
                          capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        raise SystemExit(f"making the benchmark model failed: {made.stderr[-2000:]}")
    return json.loads(made.stdout)


def main() -> None:
    rate = float(os.environ.get("BENCH_RATE", "50"))
    info = json.loads(StackPaths.from_env().info_file.read_text())
    job_python = os.path.join(info["venvs"]["job-runtime"], "bin", "python")
    name = f"bench-rollout-{uuid.uuid4().hex[:6]}"
    target = V2Target(V2Client(info["mlserver"]["url"], timeout_s=30), ModelRepository(Path(info["model_repository"])))
    quiet = lambda _line: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        plain = make_model(job_python, Path(tmp) / "plain", name, flipped=False)
        make_model(job_python, Path(tmp) / "flipped", name, flipped=True)
        inputs = v2_smoke_inputs({"dataframe_split": {"data": plain["first_rows"]}})
        labels = {tuple(plain["expected"]): "v1", tuple(1 - v for v in plain["expected"]): "v2"}
        client = V2Client(info["mlserver"]["url"], timeout_s=10)

        def ask() -> str:
            answer = client.infer(name, inputs)
            return labels.get(tuple(int(v) for v in answer["outputs"][0]["data"]), "other")

        try:
            roll_out(target, name, "1", Path(tmp) / "plain" / "model", SMOKE, LATENCY, say=quiet)
            with SteadyLoad(ask, rate_per_s=rate) as load:
                time.sleep(1.0)
                rollout = roll_out(target, name, "2", Path(tmp) / "flipped" / "model", SMOKE, LATENCY, say=quiet)
                time.sleep(1.0)
                rollback = switch_back(target, name, "1", None, SMOKE, say=quiet)
                started = time.perf_counter()
                target.unload(name, "2")
                retire_s = time.perf_counter() - started
                time.sleep(1.0)
            result = load.result
        finally:
            if target.client.ready_versions(name):
                target.client.unload(name)
            shutil.rmtree(Path(info["model_repository"]) / name, ignore_errors=True)
    print(json.dumps({
        "benchmark": "serving_rollout", "rate_per_s": rate, "model": "scikit-learn logistic regression, 30 features",
        "rollout_s": rollout.total_s, "rollout_steps_s": rollout.seconds,
        "rollout_without_latency_check_s": round(rollout.total_s - rollout.seconds["latency"], 3),
        "rollback_s": rollback["seconds"], "retire_s": round(retire_s, 3),
        "latency_check": rollout.latency, "load": result.as_dict(),
        "goal": "0 failed requests, rollout < 10 s"}), flush=True)
    if result.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
