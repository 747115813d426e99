"""The second example pipeline end to end from its spec: a PyTorch MLP trained by torchrun with 2 workers
(DistributedDataParallel, gloo on CPU) under srun on the local Slurm cluster, then evaluated, registered
in MLflow and served by MLServer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stack.airflow_api import AirflowAPI

DAG = "pipeline_breast_cancer_ddp"
MODEL = "breast-cancer-mlp"


def xcom(airflow: AirflowAPI, run_id: str, task: str):
    return airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value")["value"]


@pytest.fixture(scope="module")
def ddp_run(airflow: AirflowAPI) -> str:
    """Run through ``factory demo --pipeline breast_cancer_ddp --json``, as a user would."""
    import os
    import sys

    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "stack.demo", "--pipeline", "breast_cancer_ddp", "--json"],
                            capture_output=True, text=True, cwd=repo, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["state"] == "success", (report["tasks"], result.stderr[-2000:])
    tasks = dict(report["tasks"])
    assert tasks.pop("validate_data_on_cluster") == "skipped"  # small data: validated on the worker
    # the retirement waits for a version served before; this model's first run has none
    assert tasks.pop("retire_previous_version") in ("success", "skipped")
    assert set(tasks.values()) == {"success"} and report["dag_id"] == DAG
    assert report["served"]["model"] == MODEL and set(report["served"]["predictions"]) <= {0, 1}
    return report["run_id"]


def test_torchrun_trains_with_two_workers_in_one_slurm_job(ddp_run, airflow, registry_client):
    train = xcom(airflow, ddp_run, "train")
    assert train["state"] == "COMPLETED" and train["exit_code"] == 0
    script = (Path(train["workdir"]) / "job.sh").read_text()
    assert "-m torch.distributed.run --nnodes=1 --nproc-per-node=2 --rdzv-backend=c10d" in script
    assert script.count("srun --kill-on-bad-exit=1 --nodes=1 --ntasks-per-node=1 --cpus-per-task=2") == 1
    assert "/venvs/torch-runtime/bin/python" in script  # the spec's environment
    steps = subprocess.run(["sacct", "-j", str(train["job_id"]), "-n", "-P", "-o", "JobID,JobName,State,NTasks"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    python_steps = [line for line in steps if "|python" in line]  # the srun step that ran torchrun
    assert python_steps and python_steps[0].split("|")[2] == "COMPLETED", steps
    run_id = xcom(airflow, ddp_run, "start_run")["run_id"]
    run = registry_client.get_run(run_id)
    assert run.data.params["world_size"] == "2" and run.data.params["backend"] == "gloo"
    assert run.data.metrics["test_roc_auc"] > 0.95


def test_version_is_registered_with_spec_tags_and_served(ddp_run, airflow, registry_client, stack_info):
    from operators.serving.checks import v2_smoke_inputs
    from operators.serving.v2 import V2Client

    registered = xcom(airflow, ddp_run, "register")
    version = registry_client.get_model_version(MODEL, registered["version"])
    assert version.tags["framework"] == "pytorch" and version.tags["sector"] == "health"  # registry.tags
    assert version.tags["airflow.dag_id"] == DAG
    assert registry_client.get_model_version_by_alias(MODEL, "challenger").version == registered["version"]
    # seeded training: a re-run on the same stack scores the same as its champion, which passes min_improvement 0
    assert registered["promoted"], xcom(airflow, ddp_run, "gate")
    assert registry_client.get_model_version_by_alias(MODEL, "champion").version == registered["version"]
    assert airflow.task_states(DAG, ddp_run)["push_to_inference"] == "success"
    folder = Path(stack_info["model_repository"]) / MODEL / str(registered["version"])
    example = json.loads((folder / "model" / "serving_input_example.json").read_text())
    answer = V2Client(stack_info["mlserver"]["url"]).infer(MODEL, v2_smoke_inputs(example),
                                                           version=str(registered["version"]),
                                                           parameters={"content_type": "pd"})
    assert set(answer["outputs"][0]["data"]) <= {0, 1} and len(answer["outputs"][0]["data"]) >= 1


def test_offline_logging_is_replayed_into_the_run_with_every_metric_step(ddp_run, airflow, registry_client):
    """The spec logs offline (as on a site without outbound network): the jobs got no MLflow credentials,
    wrote SQLite stores in their folders, and the replay tasks copied them into the server's run."""
    from mlflow import MlflowClient

    from operators.tracking.offline import STORE_DIR, tracking_uri

    states = airflow.task_states(DAG, ddp_run)
    assert states["replay_train"] == states["replay_evaluate"] == "success"
    run_id = xcom(airflow, ddp_run, "start_run")["run_id"]
    server = registry_client.get_run(run_id)
    for step in ("train", "evaluate"):
        job = xcom(airflow, ddp_run, step)
        assert "MLFLOW_TRACKING_PASSWORD" not in (Path(job["workdir"]) / "job.sh").read_text()
        store = Path(job["workdir"]) / STORE_DIR
        local = MlflowClient(tracking_uri(store))
        [offline] = [run for e in local.search_experiments() for run in local.search_runs([e.experiment_id])]
        replayed = xcom(airflow, ddp_run, f"replay_{step}")
        assert replayed["metrics"] == sum(len(local.get_metric_history(offline.info.run_id, key))
                                          for key in offline.data.metrics)
        for key, value in offline.data.metrics.items():  # the same values, steps and timestamps
            mine = sorted((m.step, m.timestamp, m.value) for m in local.get_metric_history(offline.info.run_id, key))
            assert sorted((m.step, m.timestamp, m.value) for m in registry_client.get_metric_history(run_id, key)) \
                == mine, key
            assert server.data.metrics[key] == value
        assert {k: server.data.params[k] for k in offline.data.params} == offline.data.params
        assert server.data.tags[f"slurm.{step}.job_id"] == str(job["job_id"])
    assert len(registry_client.get_metric_history(run_id, "epoch_loss")) == 60  # one point per epoch
    assert server.data.tags["tracking.mode"] == "offline"


def test_version_carries_lineage_cost_and_a_model_card(ddp_run, airflow, registry_client):
    registered = xcom(airflow, ddp_run, "register")
    version = registry_client.get_model_version(MODEL, registered["version"])
    pinned = xcom(airflow, ddp_run, "pin_dataset")
    tags = version.tags
    for key in ("dataset.repository", "dataset.revision", "dataset.commit"):
        assert tags[key] == pinned[key.split(".")[1]]
    assert tags["dataset.md5"] == pinned["data"]["md5"] and tags["pipeline.site"] == "local"
    assert len(tags["pipeline.spec_sha256"]) == 64 and tags["validation.report_url"].startswith("http")
    assert float(tags["cost.cpu_hours"]) > 0 and float(tags["cost.elapsed_s"]) > 0 and "cost.gpu_hours" in tags
    card = version.description
    assert card.startswith(f"# {MODEL} version {registered['version']}") and pinned["commit"] in card
    assert "## Data contract" in card and "## Cost" in card and "evaluation/roc.png" in card
    run = registry_client.get_run(version.run_id)
    inputs = {i.dataset.digest: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {pinned["data"]["md5"], pinned["test"]["md5"]}
    source = json.loads(inputs[pinned["data"]["md5"]].source)
    assert inputs[pinned["data"]["md5"]].source_type == "dvc" and source["commit"] == pinned["commit"]
    artifacts = {a.path for a in registry_client.list_artifacts(version.run_id, "evaluation")}
    assert {"evaluation/roc.png", "evaluation/calibration.png", "evaluation/confusion_matrix.png"} <= artifacts
