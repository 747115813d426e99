"""The four lock files stay consistent with what the issues and the runtime need."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements"


def pins(lock: str) -> dict[str, str]:
    text = (REQUIREMENTS / f"{lock}.lock").read_text()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, str]]:
    return {name: pins(name) for name in ("orchestrator", "job-runtime", "serving", "torch-runtime")}


def test_orchestrator_has_the_stack_it_needs(locks):
    orchestrator = locks["orchestrator"]
    assert orchestrator["apache-airflow"].startswith("3.3.")
    for provider in ("standard", "amazon", "ssh"):
        assert f"apache-airflow-providers-{provider}" in orchestrator
    assert orchestrator["great-expectations"].startswith("1.")
    assert orchestrator["mlflow"].startswith("3.17.")
    assert orchestrator["dvc"].startswith("3.")
    assert "dvc-s3" in orchestrator and "boto3" in orchestrator
    assert "airflow-provider-great-expectations" not in orchestrator


def test_job_runtime_and_serving_have_no_airflow(locks):
    for env in ("job-runtime", "serving", "torch-runtime"):
        assert not [name for name in locks[env] if name.startswith("apache-airflow")], env


def test_serving_pins_what_the_issue_requires(locks):
    serving = locks["serving"]
    assert serving["mlserver"] == "1.7.1"
    assert serving["mlserver-mlflow"] == "1.7.1"
    major, minor, *_ = (int(part) for part in serving["uvloop"].split("."))
    assert (major, minor) < (0, 22)


def test_models_written_by_jobs_load_in_serving(locks):
    """sklearn models are saved with skops: writer and reader must match exactly."""
    job, serving = locks["job-runtime"], locks["serving"]
    shared = set(job) & set(serving)
    assert {"mlflow", "scikit-learn", "numpy", "scipy", "skops", "pandas"} <= shared
    mismatched = {name: (job[name], serving[name]) for name in shared if job[name] != serving[name]}
    assert not mismatched
    assert job["mlflow"] == locks["orchestrator"]["mlflow"]


def test_locks_are_generated_from_their_inputs():
    for env in ("orchestrator", "job-runtime", "serving", "torch-runtime"):
        header = (REQUIREMENTS / f"{env}.lock").read_text().splitlines()[:3]
        assert any(f"{env}.in" in line for line in header), f"{env}.lock was not compiled from {env}.in"


def test_torch_runtime_is_the_job_runtime_plus_torch_s_cpu_build(locks):
    """No multi-GB CUDA build: the CPU wheel from /opt/wheels; shared packages as the job runtime has them."""
    torch = locks["torch-runtime"]
    assert torch["torch"] == "2.13.0+cpu"
    assert not [name for name in torch if name.startswith(("nvidia-", "triton"))]
    job = locks["job-runtime"]
    assert set(job) <= set(torch)
    assert {name: (job[name], torch[name]) for name in job if job[name] != torch[name]} == {}
