"""The multi-node example end to end from its spec, on the local stack's sites: a PyTorch MLP trained by
one torchrun per node on 2 nodes of site A (DistributedDataParallel, gloo on CPU, rendezvous over TCP on
the first node), then evaluated, registered in MLflow and served by MLServer; then the same pipeline
retargeted to site B by changing nothing but ``site:`` in its spec, and run again.

The job folders are on each site's own file system, which the Airflow host does not see: the tests look
at them (and at ``sacct``) on the site, as its users would, through the stack's handle on its nodes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.airflow_api import AirflowAPI
from stack.clusters.site import SITE_FS, SITES, SiteLayout
from stack.services.sites import SiteCluster
from stack.settings import StackPaths

DAG = "pipeline_breast_cancer_ddp"
MODEL = "breast-cancer-mlp"
REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "pipelines" / "breast_cancer_ddp" / "pipeline.yaml"
SITE_LINE = re.compile(r"^site: (\S+)", re.M)
RETARGET = "site_b"


def xcom(airflow: AirflowAPI, run_id: str, task: str):
    return airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value")["value"]


def site_of(name: str) -> SiteCluster:
    [site] = [site for site in SITES if site.name == name]
    return SiteCluster(StackPaths.from_env(), site)


def on_site_fs(site: SiteCluster, path: str) -> Path:
    """A path of the site's shared file system, where the host keeps it (read by the test only)."""
    return SiteLayout(site.paths, site.site).fs / Path(path).relative_to(SITE_FS)


def sacct(site: SiteCluster, job_id: int) -> list[list[str]]:
    out = site.checked_on(site.site.ctl, ["sacct", "-j", str(job_id), "-n", "-P", "-o",
                                          "JobID,JobName,State,NNodes,NodeList,ExitCode"], "sacct")
    return [line.split("|") for line in out.splitlines()]


def run_demo() -> dict:
    """``factory demo --pipeline breast_cancer_ddp --json``, as a user would run it."""
    result = subprocess.run([sys.executable, "-m", "stack.demo", "--pipeline", "breast_cancer_ddp", "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=1200,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["state"] == "success", (report["tasks"], result.stderr[-2000:])
    tasks = dict(report["tasks"])
    assert tasks.pop("validate_data_on_cluster") == "skipped"  # small data: validated on the worker
    # the retirement waits for a version served before; this model's first run has none
    assert tasks.pop("retire_previous_version") in ("success", "skipped")
    assert set(tasks.values()) == {"success"} and report["dag_id"] == DAG
    assert report["served"]["model"] == MODEL and set(report["served"]["predictions"]) <= {0, 1}
    return report


def wait_for_site_tag(airflow: AirflowAPI, site: str, timeout_s: float = 180) -> None:
    """The dag-processor re-parses the spec within its min_file_process_interval (30 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tags = {tag["name"] for tag in airflow.get(f"/dags/{DAG}")["tags"]}
        if f"site:{site}" in tags:
            return
        assert time.monotonic() < deadline, f"the DAG still says {tags} {timeout_s:.0f} s after the spec changed"
        time.sleep(3)


@pytest.fixture(scope="module")
def ddp_run(airflow: AirflowAPI) -> str:
    """The example as committed: on site A."""
    site = SITE_LINE.search(SPEC.read_text())
    assert site and site.group(1) == "site_a", "the example names site A; the retarget test changes that line"
    wait_for_site_tag(airflow, "site_a")
    return run_demo()["run_id"]


@pytest.fixture(scope="module")
def retargeted_run(airflow: AirflowAPI, ddp_run: str) -> Iterator[str]:
    """The same pipeline after changing only ``site:`` to site B; the spec is restored afterwards."""
    original = SPEC.read_text()
    changed = SITE_LINE.sub(f"site: {RETARGET}", original, count=1)
    differing = [(old, new) for old, new in zip(original.splitlines(), changed.splitlines(), strict=True) if old != new]
    assert [new.split("#")[0].strip() for _, new in differing] == [f"site: {RETARGET}"], differing  # one field
    try:
        SPEC.write_text(changed)
        wait_for_site_tag(airflow, RETARGET)
        yield run_demo()["run_id"]
    finally:
        SPEC.write_text(original)
    wait_for_site_tag(airflow, "site_a")


def check_two_node_training(airflow: AirflowAPI, registry_client, run_id: str, site_name: str) -> None:
    site = site_of(site_name)
    train = xcom(airflow, run_id, "train")
    assert train["state"] == "COMPLETED" and train["exit_code"] == 0
    ti = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/train")
    if site.site.edge_queue:  # site A's catalogue entry lists its Edge worker first: the step ran there
        assert (ti["executor"], ti["queue"], ti["hostname"]) == (
            "airflow.providers.edge3.executors.EdgeExecutor", site.site.edge_queue, site.site.login.hostname)
        assert train["transport"] == "local"  # sbatch on the login node
    else:  # a Celery worker of the Airflow host, through the login node over SSH
        assert ti["hostname"] != site.site.login.hostname and train["transport"] == "ssh", (ti, train)
    assert train["workdir"].startswith(SITE_FS + "/") and not Path(train["workdir"]).exists()  # not on the host
    folder = on_site_fs(site, train["workdir"])
    script = (folder / "job.sh").read_text()
    assert "-m torch.distributed.run --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d" in script
    assert script.count("srun --kill-on-bad-exit=1 --nodes=2 --ntasks-per-node=1 --cpus-per-task=1") == 1
    assert "/venvs/torch-runtime/bin/python" in script  # the spec's environment
    rows = sacct(site, train["job_id"])
    allocation = rows[0]
    assert allocation[2] == "COMPLETED" and allocation[3] == "2", rows  # NNodes=2
    python_steps = [row for row in rows if row[1] == "python"]  # the srun step: one torchrun per node
    assert python_steps and python_steps[0][2] == "COMPLETED" and python_steps[0][3] == "2", rows
    computes = [node.hostname for node in site.site.computes]
    log = (folder / f"slurm-{train['job_id']}.out").read_text()
    ranks = re.findall(r"rank (\d) of 2 on (\S+)", log)  # each rank says where it runs
    assert sorted(rank for rank, _ in ranks) == ["0", "1"], log[-3000:]
    assert sorted(host for _, host in ranks) == sorted(computes), log[-3000:]
    run = registry_client.get_run(xcom(airflow, run_id, "start_run")["run_id"])
    assert run.data.params["world_size"] == "2" and run.data.params["backend"] == "gloo"
    assert sorted(run.data.params["hosts"].split(",")) == sorted(computes)
    assert run.data.metrics["test_roc_auc"] > 0.95


def test_torchrun_trains_on_two_nodes_of_site_a(ddp_run, airflow, registry_client):
    check_two_node_training(airflow, registry_client, ddp_run, "site_a")


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
        folder = on_site_fs(site_of("site_a"), job["workdir"])
        assert "MLFLOW_TRACKING_PASSWORD" not in (folder / "job.sh").read_text()
        store = folder / STORE_DIR
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
    assert tags["dataset.md5"] == pinned["data"]["md5"] and tags["pipeline.site"] == "site_a"
    assert tags["slurm.cluster"] == site_of("site_a").site.cluster
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


def test_retargeted_by_one_field_the_pipeline_runs_on_site_b_and_its_lineage_says_so(
        retargeted_run, ddp_run, airflow, registry_client):
    """Only ``site:`` changed (the fixture checks the diff is that one line): Slurm 24.11 instead of 22.05,
    other hosts, another file system, another connection; the same two-node training and the same checks."""
    check_two_node_training(airflow, registry_client, retargeted_run, RETARGET)
    assert xcom(airflow, retargeted_run, "register")["version"] != xcom(airflow, ddp_run, "register")["version"]
    for run_id, site in ((ddp_run, "site_a"), (retargeted_run, RETARGET)):
        version = registry_client.get_model_version(MODEL, xcom(airflow, run_id, "register")["version"])
        assert version.tags["pipeline.site"] == site, run_id
        assert version.tags["slurm.cluster"] == site_of(site).site.cluster, run_id
        assert f"on site `{site}`" in version.description  # the model card a project lead reads
