"""The model card, the gate's comparison rows and cost totals, and how a spec chooses online or offline MLflow."""

from __future__ import annotations

import pytest

from operators.pipeline.steps import PLACEHOLDERS, step_commands, step_connections, step_env, step_json_files
from operators.pipeline.tasks import job_cost
from operators.registry.model_card import comparison_rows, comparison_table, model_card
from operators.spec import PIPELINES_DIR, Tracking, load_spec

TAGS = {"pipeline": "breast_cancer", "pipeline.site": "jupiter", "dataset.name": "breast_cancer",
        "dataset.revision": "breast-cancer-v1", "dataset.commit": "c" * 40, "dataset.md5": "d" * 32,
        "dataset.test_md5": "e" * 32, "dataset.repository": "s3://registry", "code.git_sha": "f" * 40,
        "pipeline.spec_sha256": "a" * 64, "slurm.train.job_id": "11", "slurm.evaluate.job_id": "12",
        "slurm.cluster": "jupiter", "validation.status": "warned", "validation.decision": "approve",
        "airflow.dag_id": "pipeline_breast_cancer", "airflow.run_id": "manual__1", "tracking.mode": "offline",
        "cost.allocation_remaining.cpu_minutes": "5940", "cost.allocation_remaining.gres_gpu_minutes": "120"}


def test_comparison_rows_hold_both_values_the_delta_and_the_threshold() -> None:
    rows = comparison_rows({"roc_auc": 0.97, "f1": 0.9}, {"roc_auc": 0.95, "f1": 0.92}, {"roc_auc": 0.96},
                           ["roc_auc", "f1"])
    assert rows[0] == {"metric": "roc_auc", "challenger": 0.97, "champion": 0.95, "delta": pytest.approx(0.02),
                       "threshold": 0.96, "meets_threshold": True}
    assert rows[1]["delta"] == pytest.approx(-0.02) and rows[1]["meets_threshold"] is None
    table = comparison_table(rows, "champion v4")
    assert "| roc_auc | 0.9700 | 0.9500 | +0.0200 | >= 0.96 ✓ |" in table
    assert "| f1 | 0.9000 | 0.9200 | -0.0200 | n/a |" in table
    first = comparison_rows({"roc_auc": 0.9}, None, {"roc_auc": 0.95}, ["roc_auc"])
    assert first[0]["champion"] is None and first[0]["meets_threshold"] is False


def test_cost_totals_keep_unknown_figures_unknown() -> None:
    train = {"elapsed_s": 60, "cpu_time_s": 7200, "gpu_hours": 1.5, "energy_j": None}
    evaluate = {"elapsed_s": 10, "cpu_time_s": 3600, "gpu_hours": 0.0}
    assert job_cost(train, evaluate) == {"elapsed_s": 70, "cpu_hours": 3.0, "gpu_hours": 1.5, "energy_j": None}


def test_model_card_says_lineage_contract_cost_reasons_and_use() -> None:
    rows = comparison_rows({"roc_auc": 0.97}, {"roc_auc": 0.95}, {"roc_auc": 0.9}, ["roc_auc"])
    card = model_card({"model": "m", "version": "7", "promoted": False, "intended_use": "triage support only",
                       "description": "d", "tags": TAGS, "rows": rows, "champion_version": "4",
                       "reasons": ["roc_auc 0.9700 vs champion 0.9500: improvement +0.0200 below the required +0.0500"],
                       "cost": {"elapsed_s": 70.0, "cpu_hours": 3.0, "gpu_hours": 1.5, "energy_j": None},
                       "plots": ["evaluation/roc.png"], "links": {"validation report": "http://airflow/r"}})
    assert card.startswith("# m version 7\n") and "challenger, **not promoted**" in card
    assert "triage support only" in card and "below the required +0.0500" in card
    assert "champion v4, scored in the same run" in card and "| roc_auc | 0.9700 | 0.9500 | +0.0200 |" in card
    for value in ("c" * 40, "d" * 32, "e" * 32, "f" * 40, "a" * 64, "train 11, evaluate 12", "offline"):
        assert value in card
    assert "Result **warned**, steward decision: approve. Report: http://airflow/r" in card
    assert "| GPU-hours | 1.5 h |" in card and "| energy | not recorded by the site |" in card
    assert "- `evaluation/roc.png`" in card
    assert "| allocation left after the run | 5940 CPU-minutes |" in card
    assert "| allocation left after the run | 120 GPU-minutes |" in card


@pytest.mark.parametrize(("site", "mode", "offline"), [
    ("local", "auto", False),  # the local node reaches the network
    ("jupiter", "auto", True),  # compute nodes without outbound network
    ("karolina", "auto", True),  # unknown: offline is the safe choice
    ("jupiter", "online", False),
    ("local", "offline", True),
])
def test_tracking_mode_follows_the_site_unless_the_spec_chooses(site: str, mode: str, offline: bool) -> None:
    spec = load_spec(PIPELINES_DIR / "breast_cancer" / "pipeline.yaml", site=site)
    object.__setattr__(spec, "tracking", Tracking(mode=mode))  # as if the spec said so
    assert spec.offline_tracking is offline
    evaluate = step_commands(spec, "evaluate", PLACEHOLDERS)
    env = step_env(spec, "train", PLACEHOLDERS)
    connections = step_connections(spec, "train", "factory_mlflow", "factory_s3")
    if offline:  # nothing reaches for the server: no credentials, the store in the job folder, models fetched
        assert evaluate[0][:4] == ["python", "-m", "operators.tracking.offline", "init"]
        assert env["MLFLOW_TRACKING_URI"] == "sqlite:///mlflow/mlflow.db" and "MLFLOW_RUN_ID" not in env
        assert connections == ("factory_s3",)
        assert "models/challenger" in evaluate[-1] and "models/champion" in evaluate[-1]
        assert step_json_files(spec, "evaluate", PLACEHOLDERS)["inputs.json"] == PLACEHOLDERS.evaluate_inputs
    else:
        assert env == {"MLFLOW_RUN_ID": PLACEHOLDERS.run_id, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
        assert "factory_mlflow" in connections
        assert f"runs:/{PLACEHOLDERS.run_id}/model" in evaluate[-1]
