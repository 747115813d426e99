"""Rollout and rollback on the stack's MLServer while a client sends 50 requests/s to the model's
unversioned endpoint: zero failed requests, the default switches only after the checks, and a failed
step (load, smoke, latency) unloads the new version while the previous one keeps answering."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from operators.serving.checks import v2_smoke_inputs
from operators.serving.http import Credentials
from operators.serving.load import SteadyLoad
from operators.serving.repository import ModelRepository
from operators.serving.rollout import RolloutFailed, roll_out, switch_back
from operators.serving.targets import V2Target
from operators.serving.v2 import V2Client
from operators.spec import Latency, Smoke

HERE = Path(__file__).parent
RATE = 50.0
TOKEN = "inference-token-3f9a7c"
SMOKE = Smoke(allowed_outputs=[0, 1])
LATENCY = Latency(requests=50, p99_ms=250)


@dataclass
class Models:
    name: str
    plain: Path  # answers ``expected``
    flipped: Path  # answers the opposite
    expected: list[int]
    rows: list[list[float]]


def make_model(job_python: str, folder: Path, name: str, flipped: bool) -> dict:
    made = subprocess.run([job_python, str(HERE / "make_sklearn_model.py"), str(folder), name, "0",
                           *(["flipped"] if flipped else [])], capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)


@pytest.fixture(scope="module")
def models(stack_info, tmp_path_factory) -> Models:
    job_python = str(Path(stack_info["venvs"]["job-runtime"]) / "bin" / "python")
    root = tmp_path_factory.mktemp("serving-models")
    name = f"rollout-test-{uuid.uuid4().hex[:8]}"
    plain = make_model(job_python, root / "plain", name, flipped=False)
    flipped = make_model(job_python, root / "flipped", name, flipped=True)
    assert flipped["expected"] == [1 - value for value in plain["expected"]]
    return Models(name, root / "plain" / "model", root / "flipped" / "model", plain["expected"], plain["first_rows"])


@pytest.fixture
def target(stack_info, models) -> Iterator[V2Target]:
    """A V2 target with a bearer token (MLServer ignores it; a gateway in front of it would check it)."""
    client = V2Client(stack_info["mlserver"]["url"], Credentials(token=TOKEN), timeout_s=30)
    serving = V2Target(client, ModelRepository(Path(stack_info["model_repository"])))
    yield serving
    if serving.client.ready_versions(models.name):
        serving.client.unload(models.name)
    shutil.rmtree(Path(stack_info["model_repository"]) / models.name, ignore_errors=True)


def steady_load(target: V2Target, models: Models) -> SteadyLoad:
    """Unversioned requests, labelled by which model answered them (plain or flipped)."""
    inputs = v2_smoke_inputs({"dataframe_split": {"data": models.rows}})
    client = V2Client(target.client.base_url, timeout_s=10)

    labels = {tuple(models.expected): "plain", tuple(1 - v for v in models.expected): "flipped"}

    def ask() -> str:
        answer = client.infer(models.name, inputs)
        predictions = tuple(int(v) for v in answer["outputs"][0]["data"])
        return labels.get(predictions, f"other {predictions}")
    return SteadyLoad(ask, rate_per_s=RATE)


def first_rollout(target: V2Target, models: Models) -> None:
    roll_out(target, models.name, "1", models.plain, SMOKE, LATENCY, say=lambda _line: None)
    assert target.default_version(models.name) == "1"
    assert target.ready(models.name, "1"), "the default version answers by its number too"


def test_a_rollout_under_load_fails_no_request_and_switches_only_at_the_end(target, models, capsys):
    first_rollout(target, models)
    with steady_load(target, models) as load:
        time.sleep(1.0)  # a second of traffic before the rollout and one after
        report = roll_out(target, models.name, "2", models.flipped, SMOKE, LATENCY)
        time.sleep(1.0)
    result = load.result
    assert result.failed == 0, result.as_dict()
    assert result.sent >= 90 and result.answered_by["plain"] >= 25 and result.answered_by["flipped"] >= 25
    assert set(result.answered_by) == {"plain", "flipped"}, result.as_dict()
    assert report.previous_version == "1" and target.default_version(models.name) == "2"
    assert list(report.seconds) == ["load", "ready", "smoke", "latency", "default"]
    assert report.latency["requests"] == LATENCY.requests and report.latency["p99_ms"] <= LATENCY.p99_ms
    assert target.served_versions(models.name) == {"1", "2"}, "the previous version stays loaded (grace period)"
    assert target.ready(models.name, "1") and target.ready(models.name, "2")
    repository_files = "".join(p.read_text(errors="ignore") for p in
                               Path(target.repository.root / models.name).rglob("*.json"))
    assert TOKEN not in capsys.readouterr().out + repository_files

    with steady_load(target, models) as load:
        print(target.unload(models.name, "1"))  # retired after the grace period
    assert load.result.failed == 0 and target.served_versions(models.name) == {"2"}
    assert set(load.result.answered_by) == {"flipped"}


@pytest.mark.parametrize("failure", ["load", "smoke", "latency"])
def test_a_failed_step_unloads_the_new_version_and_the_previous_keeps_answering(target, models, tmp_path, failure):
    first_rollout(target, models)
    candidate, smoke, latency = models.flipped, SMOKE, LATENCY
    if failure == "load":
        candidate = tmp_path / "broken"
        shutil.copytree(models.flipped, candidate)
        (candidate / "MLmodel").write_text("this is not an MLmodel file\n")
    elif failure == "smoke":
        smoke = Smoke(allowed_outputs=[2, 3])
    else:
        latency = Latency(requests=20, p99_ms=0.001)
    with steady_load(target, models) as load, pytest.raises(RolloutFailed) as raised:
        roll_out(target, models.name, "2", candidate, smoke, latency, say=lambda _line: None)
    assert raised.value.step == failure, str(raised.value)
    assert "version 1 keeps serving" in str(raised.value) and "unloaded" in str(raised.value)
    assert load.result.failed == 0, load.result.as_dict()
    assert set(load.result.answered_by) == {"plain"}
    assert target.served_versions(models.name) == {"1"} and target.default_version(models.name) == "1"
    assert not target.repository.version_folder(models.name, "2").exists()


def test_a_rollback_under_load_fails_no_request_whether_the_old_version_is_loaded_or_retired(target, models):
    first_rollout(target, models)
    roll_out(target, models.name, "2", models.flipped, SMOKE, LATENCY, say=lambda _line: None)
    with steady_load(target, models) as load:  # within the grace period: version 1 is still loaded
        switched = switch_back(target, models.name, "1", None, SMOKE, say=lambda _line: None)
        target.unload(models.name, "2")  # what the rollback does once the default is switched back
    assert switched["replaced"] == "2" and target.default_version(models.name) == "1"
    assert load.result.failed == 0, load.result.as_dict()

    roll_out(target, models.name, "3", models.flipped, SMOKE, LATENCY, say=lambda _line: None)
    target.unload(models.name, "1")  # retired: a rollback loads it again from the registry's files
    assert target.served_versions(models.name) == {"3"}
    with steady_load(target, models) as load:
        switch_back(target, models.name, "1", models.plain, SMOKE, say=lambda _line: None)
        target.unload(models.name, "3")
    assert load.result.failed == 0, load.result.as_dict()
    assert target.default_version(models.name) == "1" and target.served_versions(models.name) == {"1"}
    assert load.result.answered_by.get("plain", 0) > 0 and load.result.answered_by.get("flipped", 0) > 0


def test_the_default_version_cannot_be_unloaded(target, models):
    first_rollout(target, models)
    with pytest.raises(Exception, match="is the default"):
        target.unload(models.name, "1")
