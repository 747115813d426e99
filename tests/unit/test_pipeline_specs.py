"""Pipeline specs: the examples load and render for every site (golden files); every case of the malformed
corpus fails with file, line, field and allowed values, in the loader, in ``factory lint`` and as a DAG
import error; ``factory render|plan`` exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.pipeline.cli import render_step
from operators.sites import SITES_DIR
from operators.spec import PIPELINES_DIR, EdgeRoute, SpecError, Submission, load_spec

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CORPUS = yaml.safe_load((FIXTURES / "malformed_specs.yaml").read_text())
BASE = FIXTURES / "specs" / "base"
GOLDEN = REPO / "tests" / "golden" / "sbatch"
EXAMPLES = sorted(path.parent.name for path in PIPELINES_DIR.glob("*/pipeline.yaml"))
FIXTURE_SPECS = ("gpu_container", "cpu_container")
RENDERED = [*EXAMPLES, *FIXTURE_SPECS]
SITE_NAMES = sorted(path.stem for path in SITES_DIR.glob("*.yaml"))


@pytest.fixture(autouse=True)
def state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORY_STATE", "/var/lib/aifactory")


def materialise(case: dict[str, Any], root: Path) -> Path:
    """One corpus case as ``root/<id>/pipeline.yaml`` beside the base's scripts."""
    folder = root / case["id"]
    shutil.copytree(BASE, folder)
    if "text" in case:
        text = case["text"]
    else:
        text = (BASE / "pipeline.yaml").read_text().replace("name: base\n", f"name: {case.get('rename', case['id'])}\n")
        for old, new in case["edit"]:
            assert text.count(old) == 1, f"corpus case {case['id']}: {old!r} must occur once in the base spec"
            text = text.replace(old, new)
    (folder / "pipeline.yaml").write_text(text)
    return folder / "pipeline.yaml"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("malformed")
    for case in CORPUS:
        materialise(case, root)
    return root


def test_examples_load_with_their_site() -> None:
    assert {"breast_cancer", "breast_cancer_ddp"} <= set(EXAMPLES)
    spec = load_spec(PIPELINES_DIR / "breast_cancer" / "pipeline.yaml")
    assert spec.site == "local" and spec.site_facts is not None and spec.site_facts.title == "local cluster"
    assert spec.connection == "factory_slurm_local"  # the catalogue's first submission with a connection
    assert spec.training.resources.memory == "1G" and spec.evaluation.thresholds["roc_auc"] == 0.95
    assert spec.contract_file.exists() and (spec.folder / spec.training.script).exists()
    ddp = load_spec(PIPELINES_DIR / "breast_cancer_ddp" / "pipeline.yaml")
    assert ddp.training.launcher == "torchrun" and ddp.site == "site_a"  # two nodes: a site of the local stack
    assert (ddp.training.resources.nodes, ddp.training.resources.tasks_per_node) == (2, 1)
    # site A lists its Edge worker first: the Slurm steps go there (where the EdgeExecutor is configured), and
    # what the central workers do on the site (the tracking replay's fetch) goes through the login node's SSH
    assert ddp.edge_route == EdgeRoute(connection="factory_slurm_site_a_local", queue="site_a")
    assert ddp.connection == "factory_slurm_site_a" and spec.edge_route is None


def test_a_spec_naming_a_connection_chooses_its_route() -> None:
    ddp = load_spec(PIPELINES_DIR / "breast_cancer_ddp" / "pipeline.yaml")
    over_ssh = dataclasses.replace(ddp, spec=dataclasses.replace(
        ddp.spec, submission=Submission(connection="factory_slurm_site_a_rest")))
    assert over_ssh.edge_route is None and over_ssh.connection == "factory_slurm_site_a_rest"
    on_edge = dataclasses.replace(ddp, spec=dataclasses.replace(
        ddp.spec, submission=Submission(connection="factory_slurm_site_a_local")))
    assert on_edge.edge_route == EdgeRoute("factory_slurm_site_a_local", "site_a")
    assert on_edge.connection == "factory_slurm_site_a"  # never the login node's local commands from elsewhere


def test_the_base_of_the_corpus_is_valid() -> None:
    assert load_spec(BASE / "pipeline.yaml").name == "base"


def test_corpus_covers_what_the_issue_lists() -> None:
    ids = {case["id"] for case in CORPUS}
    for needed in ("wrong_type_nodes", "unknown_nested_key", "missing_section", "negative_cpus",
                   "shell_metacharacters", "newline_in_value", "path_traversal", "too_many_gpus_on_jupiter"):
        assert needed in ids
    assert len(ids) == len(CORPUS) >= 45


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_each_malformed_spec_is_refused_with_a_teaching_message(case: dict[str, Any], tmp_path: Path) -> None:
    path = materialise(case, tmp_path)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    errors = raised.value.errors
    assert any(re.search(case["expect"], error) for error in errors), f"expected {case['expect']!r} in {errors}"
    assert all(error.startswith(f"{path}:") for error in errors), errors  # every message names the file and line
    assert all(re.match(rf"{re.escape(str(path))}:\d+: \S+: ", error) for error in errors), errors


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACTORY_STATE": "/var/lib/aifactory"}
    return subprocess.run([sys.executable, "-m", "operators.pipeline", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_factory_lint_reports_every_case_of_the_corpus(corpus_dir: Path) -> None:
    result = run_cli("lint", "--json", "--pipelines", str(corpus_dir))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["checked"]["pipelines"] == len(CORPUS)
    texts = [f"{Path(error['file']).name}:{error['line']}: {error['field']}: {error['message']}"
             for error in report["errors"]]
    for case in CORPUS:
        mine = [text for error, text in zip(report["errors"], texts, strict=True)
                if Path(error["file"]).parent.name == case["id"]]
        assert any(re.search(case["expect"], text) for text in mine), f"{case['id']}: {case['expect']!r} not in {mine}"
    assert all(isinstance(error["line"], int) and error["field"] for error in report["errors"]), report["errors"]
    human = run_cli("lint", "--pipelines", str(corpus_dir))
    assert human.returncode == 1 and "Traceback" not in human.stderr
    assert "too_many_gpus_on_jupiter/pipeline.yaml:20: training.resources: JUPITER nodes have 4 GPUs" in human.stderr


def test_factory_lint_passes_on_the_repository() -> None:
    result = run_cli("lint")
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+ pipeline\(s\), \d+ contract\(s\), 12 site\(s\): no error", result.stdout)


def test_render_and_plan_exit_codes(corpus_dir: Path) -> None:
    assert run_cli("render", "no_such_pipeline").returncode == 2
    unknown_site = run_cli("render", "breast_cancer", "--site", "atlantis", "--json")
    assert unknown_site.returncode == 2
    assert "no site 'atlantis'" in json.loads(unknown_site.stdout)["errors"][0]["message"]
    bad = run_cli("render", str(corpus_dir / "negative_cpus"))
    assert bad.returncode == 1 and "cpus_per_task: -2 must be a whole number >= 1" in bad.stderr
    assert run_cli("lint", "--pipelines", "/no/such/folder").returncode == 2
    rendered = json.loads(run_cli("render", "breast_cancer", "--json").stdout)
    assert rendered["connection"] == "factory_slurm_local" and rendered["script"].startswith("#!/bin/bash\n")
    plan = run_cli("plan", "breast_cancer_ddp", "--json")
    assert plan.returncode == 0, plan.stderr
    tasks = json.loads(plan.stdout)["tasks"]
    assert [task["task"] for task in tasks] == [
        "pin_dataset", "validate_data", "validate_data_on_cluster", "apply_contract",
        "steward_review", "start_run", "train", "replay_train", "evaluate", "replay_evaluate", "gate", "register",
        "push_to_inference", "retire_previous_version", "end_run"]  # tracking: offline adds the replays
    does = {task["task"]: task["does"] for task in tasks}
    assert "launcher torchrun" in does["train"] and "2 node(s) x 1 task(s)" in does["train"]
    assert "above 256M" in does["validate_data"]  # the contract's validation.cluster_above
    assert "data_contracts/breast_cancer.yaml (31 columns)" in does["validate_data"]
    cluster = does["validate_data_on_cluster"]  # the spec's validation resources (defaults), not training's
    assert "python -m operators.contracts.job" in cluster
    assert "2 CPU(s) per task" in cluster and "4G per node" in cluster
    assert "after 24h the answer is reject" in does["steward_review"]  # the contract's review section


def golden_text(pipeline: str, site: str, step: str = "train") -> str:
    """The step's script for the site, or the lint errors that stop it there (also golden)."""
    folder = FIXTURES / "specs" / pipeline if pipeline in FIXTURE_SPECS else PIPELINES_DIR / pipeline
    try:
        spec = load_spec(folder / "pipeline.yaml", site=site)
    except SpecError as error:
        text = "".join(f"# factory render refuses this: {message.split(': ', 1)[1]}\n" for message in error.errors)
    else:
        text = render_step(spec, step)
    return text.replace(str(REPO), "<repo>")  # the same on every clone


def check_golden(golden: Path, text: str) -> None:
    if os.environ.get("FACTORY_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing: run with FACTORY_UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text()


@pytest.mark.parametrize("site", SITE_NAMES)
@pytest.mark.parametrize("pipeline", RENDERED)
def test_sbatch_golden_files(pipeline: str, site: str) -> None:
    """Regenerate after an intended change with FACTORY_UPDATE_GOLDEN=1 and review the diff."""
    check_golden(GOLDEN / pipeline / f"{site}.sh", golden_text(pipeline, site))


@pytest.mark.parametrize("site", SITE_NAMES)
@pytest.mark.parametrize("pipeline", EXAMPLES)
def test_validate_step_golden_files(pipeline: str, site: str) -> None:
    """The Slurm contract-validation job (data above the contract's cluster_above), in ``<pipeline>/validate/``."""
    text = golden_text(pipeline, site, "validate")
    check_golden(GOLDEN / pipeline / "validate" / f"{site}.sh", text)
    if "refuses this" not in text:  # the spec's validation resources and the job-runtime environment, one process
        assert "-m operators.contracts.job pinned.json breast_cancer.yaml --dag-id" in text  # under its own name
        assert "#SBATCH --cpus-per-task=2" in text and "job-runtime" in text and "torchrun" not in text


def test_golden_files_show_each_site_s_spelling() -> None:
    jupiter = (GOLDEN / "gpu_container" / "jupiter.sh").read_text()
    assert "#SBATCH --gres=gpu:2" in jupiter and "apptainer exec --nv" in jupiter
    assert "--rdzv-endpoint=\"${head_addr:-$head_node}:$rdzv_port\"" in jupiter and "#SBATCH --nodes=2" in jupiter
    lumi = (GOLDEN / "gpu_container" / "lumi.sh").read_text()
    assert "#SBATCH --gpus-per-node=2" in lumi and "singularity exec --rocm" in lumi
    assert "srun --kill-on-bad-exit=1 --nodes=1 --ntasks-per-node=1 --cpus-per-task=8 --environment=" in (
        GOLDEN / "cpu_container" / "alps.sh").read_text()  # CSCS Container Engine: only through srun
    assert "refuses this" in (GOLDEN / "gpu_container" / "local.sh").read_text()  # no container runtime
    assert "use launcher srun" in (GOLDEN / "gpu_container" / "alps.sh").read_text()
    assert "#SBATCH --partition=cpu" in (GOLDEN / "breast_cancer" / "local.sh").read_text()


def test_a_bad_spec_fails_alone_as_an_import_error_and_the_others_are_scheduled(tmp_path: Path) -> None:
    """Real Airflow parsing of dags/pipelines.py: the bad spec's import error names file, line and field; every
    good spec's DAG is still built from the same file."""
    pipelines = tmp_path / "pipelines"
    for name in ("breast_cancer", "breast_cancer_ddp"):
        shutil.copytree(PIPELINES_DIR / name, pipelines / name)
    bad = materialise(next(case for case in CORPUS if case["id"] == "too_many_gpus_on_jupiter"), pipelines)
    home = tmp_path / "airflow"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(PYTHONPATH=str(REPO), FACTORY_STATE="/var/lib/aifactory", FACTORY_PIPELINES_DIR=str(pipelines),
               AIRFLOW_HOME=str(home), AIRFLOW_CONFIG=str(REPO / "airflow.cfg"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/a.db",
               AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"))
    code = ("import json; from airflow.dag_processing.dagbag import DagBag\n"
            "bags = {name: DagBag(dag_folder=f'{folder}/{name}')\n"
            "        for name in ('pipelines.py', 'pipeline_spec_errors.py')}\n"
            "print(json.dumps({name: {'dags': sorted(bag.dags), 'errors': bag.import_errors}\n"
            "                  for name, bag in bags.items()}))").replace("{folder}", str(REPO / "dags"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    # the good DAGs come from a file without an import error (Airflow marks a failing file's DAGs stale)
    assert parsed["pipelines.py"] == {"dags": ["pipeline_breast_cancer", "pipeline_breast_cancer_ddp"], "errors": {}}
    assert parsed["pipeline_spec_errors.py"]["dags"] == []
    (message,) = parsed["pipeline_spec_errors.py"]["errors"].values()
    assert f"{bad}:20: training.resources: JUPITER nodes have 4 GPUs (NVIDIA GH200); 8 GPUs per node" in message
    assert "1 pipeline spec(s) with errors" in message and "Traceback" not in message


def test_the_dag_carries_the_spec_s_schedule_notifications_and_site(tmp_path: Path) -> None:
    """Built with real Airflow (no mlflow, great_expectations or dvc import): what the spec says is what runs."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from operators.pipeline.build import build_dag

    dag = build_dag(load_spec(PIPELINES_DIR / "breast_cancer" / "pipeline.yaml"))
    notifier = dag.default_args["on_failure_callback"]
    assert isinstance(notifier, SmtpNotifier) and notifier.to == ["mlops@aifactory.local"]
    assert "on_success_callback" not in dag.default_args
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable" and "site:local" in dag.tags
    assert "dataset:breast_cancer" in str(dag.timetable.asset_condition)  # schedule: {dataset_version: true}
    train = dag.get_task("train")
    assert train.slurm_conn_id == "factory_slurm_local" and train.partition == "cpu"  # the site's default
    assert set(train.files) == {"train.py", "evaluate.py"}
    ddp = build_dag(load_spec(PIPELINES_DIR / "breast_cancer_ddp" / "pipeline.yaml")).get_task("train")
    assert (ddp.launcher, ddp.nodes, ddp.tasks_per_node, ddp.procs_per_node, ddp.cpus) == ("torchrun", 2, 1, 1, 1)
    assert ddp.slurm_conn_id == "factory_slurm_site_a"
    assert ddp.environment == "torch-runtime" and "mlp_model.py" in ddp.files
    case = {"id": "scheduled", "edit": [["  cron: \"0 3 * * 1\"", "  dataset_version: true"]]}
    scheduled = build_dag(load_spec(materialise(case, tmp_path)))
    assert "dataset:breast_cancer" in str(scheduled.timetable.asset_condition)
