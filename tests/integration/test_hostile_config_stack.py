"""Hostile config against the running stack (issue 16): a broken spec breaks only itself in the real
dag-processor, and run parameters are checked before any work starts."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from stack.airflow_api import AirflowAPI

REPO = Path(__file__).resolve().parents[2]
GOOD = ("pipeline_breast_cancer", "pipeline_breast_cancer_ddp")


def import_errors(airflow: AirflowAPI) -> list[dict]:
    return airflow.get("/importErrors?limit=100")["import_errors"]


def wait(condition, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        time.sleep(3)


def test_a_broken_spec_is_an_import_error_and_the_other_pipelines_stay_scheduled(airflow: AirflowAPI) -> None:
    for dag_id in GOOD:
        airflow.wait_for_dag(dag_id)
    broken = REPO / "pipelines" / "zz_broken_by_test"
    shutil.copytree(REPO / "pipelines" / "breast_cancer", broken)
    spec = broken / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("name: breast_cancer\n", "name: zz_broken_by_test\n", 1)
                    .replace("resources: {cpus_per_task: 1,", "resources: {cpus_per_task: many,", 1))
    try:
        def reported() -> bool:
            return any(f"{spec}:" in error["stack_trace"] for error in import_errors(airflow))

        wait(reported, "the broken spec's import error")
        (error,) = [error for error in import_errors(airflow) if f"{spec}:" in error["stack_trace"]]
        assert "training.resources.cpus_per_task: expected a whole number, got text 'many'" in error["stack_trace"]
        assert "Traceback" not in error["stack_trace"]
        for dag_id in GOOD:  # parsed again from the same file after the error appeared: still active, not stale
            dag = airflow.get(f"/dags/{dag_id}")
            assert dag["is_stale"] is False and dag["is_paused"] is False, dag
    finally:
        shutil.rmtree(broken)
    wait(lambda: not any(f"{spec}:" in error["stack_trace"] for error in import_errors(airflow)),
         "the import error clearing once the spec is gone")


def test_a_bad_run_parameter_is_refused_at_trigger_or_fails_the_first_task_naming_it(airflow: AirflowAPI) -> None:
    dag_id = "pipeline_breast_cancer"
    airflow.wait_for_dag(dag_id)
    with pytest.raises(RuntimeError, match="HTTP 400"):  # the Param schema: only the spec's training.params
        airflow.trigger(dag_id, {"train_params": {"learning_rate": 0.1}})
    with pytest.raises(RuntimeError, match="HTTP 400"):
        airflow.trigger(dag_id, {"revision": "--upload-pack=touch /tmp/pwned"})
    run_id = airflow.trigger(dag_id, {"validate_on": "cluster", "surprise": "--x"})  # unknown keys reach the run
    run = airflow.wait_for_run(dag_id, run_id, timeout_s=300)
    states = airflow.task_states(dag_id, run_id)
    assert run["state"] == "failed" and states["pin_dataset"] == "failed", states
    assert states.pop("end_run") == "failed", states  # the run's verdict, naming pin_dataset
    assert all(state in ("upstream_failed", "skipped", None) for task, state in states.items()
               if task != "pin_dataset"), states
    log = json.dumps(airflow.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/pin_dataset/logs/1"
                                 "?full_content=true"))
    assert "params.surprise: unknown run parameter (allowed: revision, train_params, validate_on)" in log
