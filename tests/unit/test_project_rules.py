"""Project rules that keep DAG parsing cheap, the code clean and the image in step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("mlflow", "great_expectations", "dvc", "sklearn", "torch")


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_layering_holds():
    """import-linter's contracts (pyproject.toml): CLI and DAG building -> operators -> tasks -> clients -> core,
    code inside jobs imports nothing of the orchestrator side, the config core no Airflow, no cycles."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_parsing_dags_imports_no_heavy_library():
    probe = (
        "import importlib.util, json, sys, pathlib\n"
        f"for path in sorted(pathlib.Path({str(REPO / 'dags')!r}).glob('*.py')):\n"
        "    spec = importlib.util.spec_from_file_location(path.stem, path)\n"
        "    module = sys.modules[path.stem] = importlib.util.module_from_spec(spec)  # as Airflow's DagBag does\n"
        "    spec.loader.exec_module(module)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    env = {**os.environ, "FACTORY_STATE": os.environ.get("FACTORY_STATE", "/var/lib/aifactory")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_dockerfile_base_image_matches_the_lock():
    airflow = re.search(r"^apache-airflow==(\S+)", (REPO / "requirements/orchestrator.lock").read_text(), re.M)
    base = re.search(r"^FROM apache/airflow:(\S+)-python(\S+)", (REPO / "Dockerfile").read_text(), re.M)
    assert airflow and base
    assert base.group(1) == airflow.group(1)
    assert base.group(2) == "3.11"


def test_the_top_level_layout_users_expect():
    for name in ("dags", "operators", "plugins", "pipelines", "data_contracts", "sites", "tests", "bench",
                 "stack", "airflow.cfg", "Dockerfile", "pyproject.toml", "README.md", "factory", ".ci/run"):
        assert (REPO / name).exists(), name


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "./factory test" in readme
    assert "./factory test" in ci


def test_test_modules_have_unique_names():
    """pytest's default import mode collects tests/unit and tests/integration as one flat namespace: two
    modules of one name stop the whole run at collection (CI once failed so after 53 s)."""
    names = [path.name for path in (REPO / "tests").rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
