"""The example pipeline end to end on the real stack: validate → Slurm → evaluate → MLflow → MLServer."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from stack.airflow_api import AirflowAPI

DAG = "pipeline_breast_cancer"
MODEL = "breast-cancer-classifier"


def run_pipeline(airflow: AirflowAPI, conf: dict | None = None) -> tuple[str, dict, dict[str, str]]:
    run_id = airflow.trigger(DAG, {"revision": "breast-cancer-v1", "train_params": {}, **(conf or {})})
    run = airflow.wait_for_run(DAG, run_id, timeout_s=600)
    return run_id, run, airflow.task_states(DAG, run_id)


def xcom(airflow: AirflowAPI, run_id: str, task: str, key: str = "return_value"):
    return airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/{key}")["value"]


def task_log(airflow: AirflowAPI, run_id: str, task: str) -> str:
    content = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/logs/1?full_content=true")
    return json.dumps(content)


def jobs_of_run(run_id: str) -> list[str]:
    """Every Slurm job accounting knows for this Airflow run (jobs carry their task identity)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--starttime", "now-1days", "-o", "JobID,Comment"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|")[0] for line in out.splitlines() if f"/{run_id}/" in line]


@pytest.fixture(scope="module")
def champion_run(airflow):
    """A successful run: the version it registers is the champion the other tests compare with."""
    run_id, run, states = run_pipeline(airflow)
    assert run["state"] == "success", states
    return run_id


def test_pipeline_succeeds_and_registers_a_version_with_its_lineage(champion_run, airflow, registry_client, stack_info):
    states = airflow.task_states(DAG, champion_run)
    assert states.pop("validate_data_on_cluster") == "skipped"  # 40 kB: validated on the worker
    pushed = xcom(airflow, champion_run, "push_to_inference")
    # nothing to retire when no version served before (a fresh stack's first run of this pipeline)
    assert states.pop("retire_previous_version") == ("success" if pushed["previous_version"] else "skipped")
    assert set(states.values()) == {"success"}
    registered = xcom(airflow, champion_run, "register")
    assert registered["promoted"] is True
    version = registry_client.get_model_version(MODEL, registered["version"])
    assert pushed["version"] == str(registered["version"]) and set(pushed["seconds"]) == {
        "load", "ready", "smoke", "latency", "default"}
    assert version.tags["serving.status"] == "serving" and version.tags["serving.target"] == "v2"
    assert json.loads(version.tags["serving.latency"])["requests"] == 100
    assert version.tags["serving.answers_as"] == (f"{MODEL}: model_version {registered['version']} and header "
                                                  "X-Model-Version in every answer")
    from pathlib import Path

    from operators.serving.repository import ModelRepository

    assert ModelRepository(Path(stack_info["model_repository"])).default_version(MODEL) == str(registered["version"])
    if pushed["previous_version"]:
        retired = registry_client.get_model_version(MODEL, pushed["previous_version"])
        assert retired.tags["serving.status"] == "retired"
    pinned = xcom(airflow, champion_run, "pin_dataset")
    tags = version.tags
    assert tags["dataset.repository"] == pinned["repository"]
    assert tags["dataset.revision"] == "breast-cancer-v1"
    assert tags["dataset.commit"] == pinned["commit"] and len(pinned["commit"]) == 40
    assert tags["dataset.md5"] == pinned["data"]["md5"]
    assert pinned["earlier"] == [], "v1 is the registry's first version: no drift baseline before it"
    assert tags["validation.status"] == "passed" and tags["validation.decision"] == "not needed"
    assert tags["validation.report"].startswith("s3://reports/validation/breast_cancer/breast-cancer-v1/")
    train_job = xcom(airflow, champion_run, "train")
    assert tags["slurm.cluster"] == stack_info["cluster"]
    assert tags["slurm.train.job_id"] == str(train_job["job_id"])
    assert train_job["state"] == "COMPLETED" and train_job["elapsed_s"] >= 0
    assert train_job["max_rss_bytes"] and train_job["max_rss_bytes"] > 10 * 2**20
    assert len(tags["code.git_sha"].removesuffix("-dirty")) == 40
    assert tags["airflow.dag_id"] == DAG and tags["airflow.run_id"] == champion_run
    assert json.loads(tags["gate.reasons"])
    assert registry_client.get_model_version_by_alias(MODEL, "champion").version == registered["version"]
    assert registry_client.get_model_version_by_alias(MODEL, "challenger").version == registered["version"]
    run = registry_client.get_run(version.run_id)
    assert run.data.metrics["test_roc_auc"] > 0.95
    assert {"C", "max_iter", "seed"} <= set(run.data.params)


def test_task_logs_carry_no_noise(champion_run, airflow):
    """What users read in a good run's logs: no unrecorded energy, no deprecation of a library we never call,
    no emoji. (Airflow itself still warns "Skipping masking for a secret as it's too short" once per task: it
    masks every value of a connection's extra when it fetches the connection, "rest" included.)"""
    for task in ("train", "evaluate", "start_run", "register"):
        log = task_log(airflow, champion_run, task)
        for noise in ("energy None", "httpx2", "\\ud83c\\udfc3", "\U0001f3c3", "View run"):
            assert noise not in log, (task, noise)
    assert "Slurm job" in task_log(airflow, champion_run, "train") and "COMPLETED: elapsed" in task_log(
        airflow, champion_run, "train")


def test_promoted_model_answers_v2_requests(champion_run, airflow, stack_info):
    from pathlib import Path

    from operators.serving.checks import v2_smoke_inputs
    from operators.serving.v2 import V2Client

    version = str(xcom(airflow, champion_run, "register")["version"])
    folder = Path(stack_info["model_repository"]) / MODEL / version
    example = json.loads((folder / "model" / "serving_input_example.json").read_text())
    client = V2Client(stack_info["mlserver"]["url"])
    answer = client.infer(MODEL, v2_smoke_inputs(example), version=version, parameters={"content_type": "pd"})
    assert answer["model_version"] == version
    # unversioned, as clients call the served model: the answer names the registered version, not "default"
    import httpx

    unversioned = httpx.post(f"{stack_info['mlserver']['url']}/v2/models/{MODEL}/infer", timeout=30,
                             json={"inputs": v2_smoke_inputs(example), "parameters": {"content_type": "pd"}})
    assert unversioned.status_code == 200, unversioned.text
    assert unversioned.json()["model_version"] == version and unversioned.headers["X-Model-Version"] == version
    assert set(answer["outputs"][0]["data"]) <= {0, 1}
    assert any(entry["name"] == MODEL and entry.get("version") == version and entry["state"] == "READY"
               for entry in client.repository_index())


def test_extra_links_point_at_the_job_run_version_and_report(champion_run, airflow):
    links = {}
    for task in ("validate_data", "start_run", "train", "register"):
        links.update(airflow.get(f"/dags/{DAG}/dagRuns/{champion_run}/taskInstances/{task}/links")["extra_links"])
    assert "/factory/reports/validation/breast_cancer/" in links["Validation report"]
    assert "/#/experiments/" in links["MLflow run"] and "/runs/" in links["MLflow run"]
    assert "/#/models/breast-cancer-classifier/versions/" in links["Model version"]
    assert "/factory/slurm/factory_slurm_local/jobs/" in links["Slurm job"]
    report = airflow.raw(links["Validation report"].removeprefix(airflow.url))
    assert b"<html" in report.lower()


def test_contract_breaking_version_stops_before_slurm(champion_run, airflow):
    run_id, run, states = run_pipeline(airflow, {"revision": "breast-cancer-v2-corrupt"})
    assert run["state"] == "failed"
    assert states["pin_dataset"] == "success"
    assert states["validate_data"] == "success" and states["apply_contract"] == "failed"
    assert states["steward_review"] == states["train"] == "upstream_failed"
    assert jobs_of_run(run_id) == [], "a job was submitted for a dataset that broke its contract"
    assert states["end_run"] == "failed"  # the run's verdict, without an MLflow run to end
    assert f"Pipeline run {run_id} failed: task apply_contract failed" in task_log(airflow, run_id, "end_run")
    log = task_log(airflow, run_id, "apply_contract")
    assert "breaks contract breast_cancer" in log and "breast-cancer-v2-corrupt" in log
    assert "columns.mean_radius.rules.0" in log and "columns.diagnosis.rules.0" in log
    assert "5 of 455 rows" in log  # the merged count of negative radii, with the rule's contract line
    assert "Traceback" not in log and "Task failed with exception" not in log, "an expected outcome, not a crash"
    assert jobs_of_run(champion_run), "the accounting check must see the jobs of a good run"
    # the spec's e-mail on failure reaches the stack's mail sink, and its sending left no error in the log
    [mail] = mail_about(f"[{DAG}] apply_contract: failure", run_id)
    assert mail["To"] == "mlops@aifactory.local"
    assert "Failed to send notification" not in log and "not sent through connection" not in log


def mail_about(subject: str, run_id: str, timeout_s: float = 30) -> list:
    """The messages the stack's mail sink (stack/services/mail.py) received with this subject about this run."""
    from stack.services.mail import MailSink
    from stack.settings import StackPaths

    sink, deadline = MailSink(StackPaths.from_env()), time.monotonic() + timeout_s
    while not (found := [message for message in sink.messages() if message["Subject"] == subject
                         and run_id in message.get_payload()[0].get_payload(decode=True).decode()]):
        assert time.monotonic() < deadline, f"no mail {subject!r} in {sink.maildir}"
        time.sleep(1)
    return found


def test_worse_model_is_registered_but_not_promoted(champion_run, airflow, registry_client, stack_info):
    from operators.serving.v2 import V2Client

    champion = registry_client.get_model_version_by_alias(MODEL, "champion").version
    run_id, run, states = run_pipeline(airflow, {"train_params": {"C": 0.00001}})
    assert run["state"] == "success", states
    assert states["push_to_inference"] == "skipped"
    registered = xcom(airflow, run_id, "register")
    assert registered["promoted"] is False
    assert registry_client.get_model_version_by_alias(MODEL, "champion").version == champion
    assert registry_client.get_model_version_by_alias(MODEL, "challenger").version == registered["version"]
    reasons = json.loads(registry_client.get_model_version(MODEL, registered["version"]).tags["gate.reasons"])
    assert any("below" in reason for reason in reasons)
    index = V2Client(stack_info["mlserver"]["url"]).repository_index()
    served = {entry.get("version") for entry in index if entry["name"] == MODEL and entry["state"] == "READY"}
    assert champion in served and str(registered["version"]) not in served


def test_a_manual_rollback_under_load_serves_the_chosen_version_and_back_without_a_failed_request(
        champion_run, airflow, registry_client, stack_info):
    """``serving_rollback`` to a version that was never served (loaded from the registry), then
    ``./factory rollback --to`` the champion again, while a client asks the unversioned endpoint 50 times a
    second."""
    import os
    import sys
    from pathlib import Path

    from operators.serving.checks import v2_smoke_inputs
    from operators.serving.load import SteadyLoad
    from operators.serving.repository import ModelRepository
    from operators.serving.v2 import V2Client

    champion = registry_client.get_model_version_by_alias(MODEL, "champion").version
    other = str(xcom(airflow, run_pipeline(airflow, {"train_params": {"C": 0.00001}})[0], "register")["version"])
    repository = ModelRepository(Path(stack_info["model_repository"]))
    example = json.loads(repository.model_file(MODEL, champion, "serving_input_example.json").read_text())
    client = V2Client(stack_info["mlserver"]["url"], timeout_s=10)
    inputs = v2_smoke_inputs(example)

    def ask() -> str:
        return str(client.infer(MODEL, inputs, parameters={"content_type": "pd"})["outputs"][0]["data"])

    with SteadyLoad(ask, rate_per_s=50) as load:
        run_id = airflow.trigger("serving_rollback", {"pipeline": "breast_cancer", "to_version": other,
                                                      "reason": "e2e test: serve another version"})
        assert airflow.wait_for_run("serving_rollback", run_id, timeout_s=300)["state"] == "success"
        assert registry_client.get_model_version_by_alias(MODEL, "champion").version == other
        assert repository.default_version(MODEL) == other
        rolled_back = registry_client.get_model_version(MODEL, champion).tags
        assert rolled_back["serving.status"] == "rolled_back" and rolled_back["serving.rolled_back_to"] == other
        assert rolled_back["serving.reason"] == "e2e test: serve another version"
        assert rolled_back["serving.by"] == f"serving_rollback/{run_id}"
        assert registry_client.get_model_version(MODEL, other).tags["serving.status"] == "serving"
        back = subprocess.run([sys.executable, "-m", "stack.rollback", "breast_cancer", "--to", champion,
                               "--reason", "e2e test: the champion again"], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert back.returncode == 0, back.stdout + back.stderr
    assert load.result.failed == 0, load.result.as_dict()
    assert load.result.sent >= 100
    assert registry_client.get_model_version_by_alias(MODEL, "champion").version == champion
    assert repository.default_version(MODEL) == champion
    assert client.model_ready(MODEL, champion) and not client.model_ready(MODEL, other), "the replaced one is unloaded"
    assert other not in repository.installed_versions(MODEL)
    refused = subprocess.run([sys.executable, "-m", "stack.rollback", "no_such_pipeline", "--reason", "x"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert refused.returncode == 2 and "known: breast_cancer" in refused.stderr


def test_a_rerun_at_the_same_dataset_revision_and_code_gives_the_same_metrics(champion_run, airflow,
                                                                              registry_client):
    """Seeded training: the same data (revision, commit, md5), code sha and params give the same metrics."""
    run_id, run, states = run_pipeline(airflow)
    assert run["state"] == "success", states
    first, second = (registry_client.get_run(xcom(airflow, r, "start_run")["run_id"]) for r in (champion_run, run_id))
    for key in ("dataset.revision", "dataset.commit", "dataset.md5", "code.git_sha", "pipeline.spec_sha256"):
        assert first.data.tags[key] == second.data.tags[key], key
    assert first.data.params == second.data.params
    scores = [key for key in first.data.metrics if key.startswith(("test_", "train_", "cv_"))]
    assert len(scores) >= 6
    assert {k: second.data.metrics[k] for k in scores} == {k: first.data.metrics[k] for k in scores}


def test_failing_training_job_reports_state_exit_code_and_log_tail(champion_run, airflow, registry_client):
    run_id, run, states = run_pipeline(airflow, {"train_params": {"C": -1}})
    assert run["state"] == "failed"
    assert states["train"] == "failed" and states["evaluate"] == "upstream_failed"
    log = task_log(airflow, run_id, "train")
    assert "ended FAILED with exit code 1" in log
    assert "InvalidParameterError" in log, "the tail of the job's own log must be in the task failure"
    assert len(jobs_of_run(run_id)) == 1
    mlflow_run = ended_mlflow_run(airflow, registry_client, run_id, end_run="failed")  # the run's verdict
    assert mlflow_run.info.status == "FAILED", "a dead job's MLflow run must not stay RUNNING"
    assert mlflow_run.data.tags["factory.end_reason"].startswith("task train failed"), mlflow_run.data.tags


def ended_mlflow_run(airflow: AirflowAPI, registry_client, run_id: str, end_run: str = "success",
                     timeout_s: float = 200):
    """The MLflow run of an Airflow run once its teardown ``end_run`` has finished (as ``end_run``)."""
    deadline = time.monotonic() + timeout_s
    while airflow.task_states(DAG, run_id).get("end_run") not in ("success", "failed", "skipped"):
        assert time.monotonic() < deadline, airflow.task_states(DAG, run_id)
        time.sleep(2)
    assert airflow.task_states(DAG, run_id)["end_run"] == end_run, task_log(airflow, run_id, "end_run")
    return registry_client.get_run(xcom(airflow, run_id, "start_run")["run_id"])


def slurm(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def queued_jobs_of_run(run_id: str) -> list[str]:
    """The run's jobs in the controller's queue (``%k``: the comment, the task identity)."""
    return [line.split("|")[0] for line in slurm("squeue", "-h", "-o", "%i|%k").splitlines() if f"/{run_id}/" in line]


def test_an_airflow_run_marked_failed_while_its_job_waits_cancels_the_job_and_kills_the_mlflow_run(
        champion_run, airflow, registry_client):
    """A user stops a run in Airflow: the job is cancelled, and the MLflow run ends KILLED naming that job,
    not RUNNING for ever. Every node is held by another job first, so the training job is surely waiting."""
    nodes = slurm("sinfo", "-h", "-o", "%D")
    blocker = slurm("sbatch", "--parsable", "--exclusive", f"--nodes={nodes}", "--job-name=hold-all-nodes",
                    "--output=/dev/null", "--time=00:15:00", "--wrap", "sleep 900").split(";")[0]
    try:
        run_id = airflow.trigger(DAG, {"revision": "breast-cancer-v1", "train_params": {}})
        deadline = time.monotonic() + 300
        while not (train_jobs := queued_jobs_of_run(run_id)):  # accounting lists a pending job late
            assert time.monotonic() < deadline, airflow.task_states(DAG, run_id)
            time.sleep(2)
        assert slurm("squeue", "-h", "-j", train_jobs[0], "-o", "%T") == "PENDING"
        workdir = slurm("squeue", "-h", "-j", train_jobs[0], "-o", "%Z")
        airflow.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})
        # end_run is the run's verdict: without it Airflow would call a stopped run with a teardown a success
        mlflow_run = ended_mlflow_run(airflow, registry_client, run_id, end_run="failed")
    finally:
        subprocess.run(["scancel", blocker], check=False)
    assert airflow.wait_for_run(DAG, run_id, timeout_s=60)["state"] == "failed"
    states = slurm("sacct", "-X", "-n", "-P", "-j", train_jobs[0], "-o", "State").split()
    assert states and states[0].startswith("CANCELLED"), states
    assert mlflow_run.info.status == "KILLED", mlflow_run.data.tags
    assert mlflow_run.data.tags["factory.end_reason"] == f"Slurm job {train_jobs[0]} (train) CANCELLED"
    assert len(jobs_of_run(run_id)) == 1
    assert f"Pipeline run {run_id} failed: Slurm job {train_jobs[0]} (train) CANCELLED" in task_log(
        airflow, run_id, "end_run")
    from pathlib import Path

    assert not (Path(workdir) / "job.env").exists(), "a job cancelled before it started keeps no credentials"
