"""Offline MLflow logging on a compute node without network, replayed into the real MLflow server.

A real job-side store: ``python -m operators.tracking.offline init`` and the example's ``train.py`` run
with the job-runtime Python exactly as in a Slurm job (MLflow pointed at the store by environment, no
server reachable: the tracking variables of the server are removed), plus a script that logs metrics
with steps, nested artifacts and tags. The replay must copy every item with its values, steps and
timestamps, link the model to the server's run, and add nothing when run again or after a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from operators.tracking.offline import STORE_DIR, offline_env, tracking_uri
from operators.tracking.replay import ReplayError, replay, replay_metrics, replay_params

REPO = Path(__file__).resolve().parents[2]
JOB_PYTHON = Path(os.environ.get("FACTORY_STATE", "/var/lib/aifactory")) / "venvs" / "job-runtime" / "bin" / "python"
EXTRA_LOGGING = """
import mlflow, time
with mlflow.start_run() as run:
    for step in range(250):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000_000 + step)
    mlflow.log_text("nested", "reports/deep/note.txt")
    mlflow.set_tag("job.note", "offline")
"""


def job_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    return {**env, **offline_env("offline-replay-test"), "PYTHONPATH": str(REPO), "SLURM_JOB_ID": "4242"}


@pytest.fixture(scope="module")
def offline_job(tmp_path_factory, stack_info) -> Path:
    """A job folder after a training job logged offline: ``mlflow/`` holds the store."""
    if not JOB_PYTHON.exists():
        pytest.fail(f"{JOB_PYTHON} missing: run ./factory setup")
    folder = tmp_path_factory.mktemp("job")
    (folder / "data").mkdir()
    subprocess.run([str(JOB_PYTHON), "-c", (
        "from sklearn.datasets import load_breast_cancer\n"
        "f = load_breast_cancer(as_frame=True).frame\n"
        "f.columns = [c.strip().lower().replace(' ', '_') for c in f.columns]\n"
        "f.rename(columns={'target': 'diagnosis'}).to_csv('data/train.csv', index=False)\n")],
        cwd=folder, check=True)
    (folder / "params.json").write_text('{"C": 0.5}')
    env = job_env(folder)
    for command in (["-m", "operators.tracking.offline", "init", STORE_DIR, "--experiment", "offline-replay-test"],
                    [str(REPO / "pipelines/breast_cancer/train.py"), "--data-dir", "data", "--params", "params.json"]):
        done = subprocess.run([str(JOB_PYTHON), *command], cwd=folder, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.fixture()
def central_run(registry_client):
    experiment = registry_client.get_experiment_by_name("offline-replay-test")
    experiment_id = experiment.experiment_id if experiment else registry_client.create_experiment("offline-replay-test")
    return registry_client.create_run(experiment_id).info.run_id


def local_client(store: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri(store))


def test_the_job_logged_into_its_own_store_without_a_server(offline_job):
    store = offline_job / STORE_DIR
    local = local_client(store)
    [run] = local.search_runs([local.get_experiment_by_name("offline-replay-test").experiment_id])
    assert {"C", "max_iter", "seed", "n_train_rows"} <= set(run.data.params) and run.data.params["C"] == "0.5"
    assert {"train_accuracy", "cv_roc_auc"} <= set(run.data.metrics)
    [model] = local.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert model.source_run_id == run.info.run_id
    assert (store / "artifacts").is_dir() and any((store / "artifacts").rglob("MLmodel"))


def test_replay_copies_everything_and_a_second_replay_adds_nothing(offline_job, central_run, registry_client,
                                                                    monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_client.tracking_uri)

    store = offline_job / STORE_DIR
    env = job_env(offline_job)
    # more of what jobs log into the same offline run: metrics with steps and timestamps, nested artifacts, a tag
    local = local_client(store)
    [run] = local.search_runs([local.get_experiment_by_name("offline-replay-test").experiment_id])
    done = subprocess.run([str(JOB_PYTHON), "-c", EXTRA_LOGGING], cwd=offline_job,
                          env={**env, "MLFLOW_RUN_ID": run.info.run_id}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    run = local.get_run(run.info.run_id)

    counts = replay(store, registry_client, central_run, {"slurm.train.job_id": "4242"})
    assert counts.added == {"params": counts.params, "metrics": counts.metrics, "tags": counts.tags,
                            "artifacts": counts.artifacts, "models": counts.models}
    assert counts.params == len(run.data.params) and counts.models == 1 and counts.artifacts == 1
    assert counts.metrics == 250 + 2

    server = registry_client.get_run(central_run)
    assert server.data.params == run.data.params
    assert server.data.metrics == run.data.metrics
    assert server.data.tags["job.note"] == "offline" and server.data.tags["slurm.train.job_id"] == "4242"
    for key in run.data.metrics:
        mine = [(m.step, m.timestamp, m.value) for m in local.get_metric_history(run.info.run_id, key)]
        theirs = [(m.step, m.timestamp, m.value) for m in registry_client.get_metric_history(central_run, key)]
        assert sorted(theirs) == sorted(mine), key
    downloaded = registry_client.download_artifacts(central_run, "reports/deep/note.txt", str(offline_job))
    assert Path(downloaded).read_text() == "nested"
    model = mlflow.pyfunc.load_model(f"runs:/{central_run}/model")  # the model is linked to the server's run
    assert "sklearn" in model.metadata.flavors

    again = replay(store, registry_client, central_run, {"slurm.train.job_id": "4242"})
    assert set(again.added.values()) == {0}
    assert again.metrics == counts.metrics
    assert len(registry_client.get_metric_history(central_run, "loss")) == 250
    models = registry_client.search_logged_models(experiment_ids=[server.info.experiment_id])
    assert [m.source_run_id for m in models].count(central_run) == 1


def test_a_replay_that_stopped_half_way_completes_without_duplicates(offline_job, central_run, registry_client):
    from operators.tracking.replay import Counts, offline_run

    store = offline_job / STORE_DIR
    local = local_client(store)
    local_run = offline_run(local, store)
    half = Counts()  # the task died after params and metrics: a retry runs the whole replay again
    replay_params(local_run, registry_client, registry_client.get_run(central_run), half, store)
    replay_metrics(local, local_run, registry_client, central_run, half)
    counts = replay(store, registry_client, central_run)
    assert counts.added["params"] == 0 and counts.added["metrics"] == 0 and counts.added["models"] == 1
    for key in local_run.data.metrics:
        assert len(registry_client.get_metric_history(central_run, key)) == \
            len(local.get_metric_history(local_run.info.run_id, key))


def test_conflicting_param_and_missing_store_are_clear_errors(offline_job, central_run, registry_client, tmp_path):
    registry_client.log_param(central_run, "C", "99")
    with pytest.raises(ReplayError, match=r"param C='0.5' conflicts with '99'"):
        replay(offline_job / STORE_DIR, registry_client, central_run)
    with pytest.raises(ReplayError, match="no offline MLflow store"):
        replay(tmp_path, registry_client, central_run)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
