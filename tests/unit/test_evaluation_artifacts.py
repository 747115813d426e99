"""The evaluation job end to end, without mocks: two real scikit-learn models saved as MLflow model
folders, a SQLite tracking store, a run created beforehand as the orchestrator does; the job must log
the same metrics sklearn computes, and the comparison table, curves and plots a reviewer checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.calibration import calibration_curve
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from operators.jobs import evaluate

TARGET = "diagnosis"  # as pipelines/breast_cancer: 0 malignant, 1 benign
CLASSES = [0, 1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("calibration.png", "confusion_matrix.png", "roc.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Models, test.csv and a tracking store shared by the tests (training and MLflow's SQLite
    migrations are the slow part). The champion is deliberately weaker (strong regularisation, three
    features) so the deltas are not all zero."""
    root = tmp_path_factory.mktemp("evaluation")
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": TARGET})
    train, test = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame[TARGET])
    (root / "data").mkdir()
    test.to_csv(root / "data" / "test.csv", index=False)
    features, labels = train.drop(columns=[TARGET]), train[TARGET]
    challenger = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=42))
    champion = make_pipeline(StandardScaler(), LogisticRegression(C=0.001, max_iter=1000, random_state=42))
    challenger.fit(features, labels)
    champion.fit(features[list(features.columns[:3])], labels)
    mlflow.sklearn.save_model(challenger, root / "models" / "challenger")
    mlflow.sklearn.save_model(champion, root / "models" / "champion")
    with pytest.MonkeyPatch.context() as patch:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        # an integration test in the same process may have set a global tracking URI (it beats the variable)
        earlier = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(uri)
        try:
            experiment = MlflowClient().create_experiment("evaluation",
                                                          artifact_location=(root / "artifacts").as_uri())
            yield {"root": root, "test": test, "experiment": experiment,
                   "models": {"challenger": challenger, "champion": champion}}
        finally:
            mlflow.set_tracking_uri(earlier)


def evaluate_in_new_run(workspace: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                        champion: Path | None) -> tuple[str, dict[str, Any], float]:
    """Create the run as the orchestrator does, then run the job's main() in it; returns the run id,
    the output JSON and the job's wall time."""
    root = workspace["root"]
    run_id = MlflowClient().create_run(workspace["experiment"]).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    # a job is a fresh process; in the test process an earlier test may have set another active experiment
    mlflow.set_experiment(experiment_id=workspace["experiment"])
    monkeypatch.chdir(root)  # the job's folder: local model paths are relative to it
    output = root / f"{run_id}.json"
    argv = ["--data-dir", "data", "--challenger", "models/challenger", "--output", str(output)]
    if champion is not None:
        argv += ["--champion", str(champion)]
    began = time.monotonic()
    evaluate.main(TARGET, CLASSES, argv)
    return run_id, json.loads(output.read_text()), time.monotonic() - began


def sklearn_metrics(model: Any, test: pd.DataFrame) -> dict[str, float]:
    """The reference: sklearn's own metric functions on the model's predictions."""
    features = test.drop(columns=[TARGET])[list(model.feature_names_in_)]
    labels, predicted = test[TARGET], model.predict(features)
    return {"accuracy": accuracy_score(labels, predicted), "f1": f1_score(labels, predicted),
            "roc_auc": roc_auc_score(labels, model.predict_proba(features)[:, 1]),
            "precision": precision_score(labels, predicted), "recall": recall_score(labels, predicted)}


def artifact(run_id: str, name: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"evaluation/{name}"))


def test_challenger_and_champion_scored_on_the_same_rows_with_artifacts(
        workspace: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, result, seconds = evaluate_in_new_run(workspace, monkeypatch, Path("models/champion"))
    with capsys.disabled():
        print(f"\none evaluation with champion and plots: {seconds:.2f} s")
    test = workspace["test"]
    expected = {role: sklearn_metrics(model, test) for role, model in workspace["models"].items()}

    assert result["challenger"] == pytest.approx(expected["challenger"], abs=1e-12)
    assert result["champion"] == pytest.approx(expected["champion"], abs=1e-12)
    assert result["champion_uri"] == "models/champion" and result["n_test_rows"] == len(test)
    logged = MlflowClient().get_run(run_id).data.metrics
    for name in evaluate.METRICS:
        assert logged[f"test_{name}"] == pytest.approx(expected["challenger"][name], abs=1e-12)
        assert logged[f"champion_test_{name}"] == pytest.approx(expected["champion"][name], abs=1e-12)

    listed = {item.path for item in MlflowClient().list_artifacts(run_id, "evaluation")}
    assert listed == set(result["artifacts"]) == {
        f"evaluation/{name}" for name in (*PLOTS, "comparison.md", "confusion_matrix.json", "curves.json")}
    for name in PLOTS:
        data = artifact(run_id, name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name

    rows = {row["metric"]: row for row in result["comparison"]}
    assert list(rows) == list(evaluate.METRICS)
    for name, row in rows.items():
        assert row["delta"] == pytest.approx(expected["challenger"][name] - expected["champion"][name], abs=1e-12)
    table = artifact(run_id, "comparison.md").read_text().splitlines()
    assert table[0] == "| metric | challenger | champion | delta |"
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in table[2:]}
    assert list(cells) == list(evaluate.METRICS)
    for name, (mine, theirs, delta) in cells.items():
        assert float(mine) == pytest.approx(expected["challenger"][name], abs=5e-5)
        assert float(theirs) == pytest.approx(expected["champion"][name], abs=5e-5)
        assert re.fullmatch(r"[+-]\d\.\d{4}", delta), delta
        assert float(delta) == pytest.approx(expected["challenger"][name] - expected["champion"][name], abs=1e-4)

    curves = json.loads(artifact(run_id, "curves.json").read_text())
    assert set(curves) == {"positive_label", "challenger", "champion"} and curves["positive_label"] == 1
    for role, model in workspace["models"].items():
        roc, calibration = curves[role]["roc"], curves[role]["calibration"]
        assert set(roc) == {"fpr", "tpr", "thresholds", "auc"}
        assert set(calibration) == {"mean_predicted", "fraction_positive", "n_bins", "strategy", "brier"}
        assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
        assert all(a <= b for a, b in zip(roc["fpr"], roc["fpr"][1:], strict=False)), role
        assert all(a <= b for a, b in zip(roc["tpr"], roc["tpr"][1:], strict=False)), role
        assert roc["auc"] == pytest.approx(expected[role]["roc_auc"], abs=1e-12)
        features = test.drop(columns=[TARGET])[list(model.feature_names_in_)]
        fraction, mean = calibration_curve(test[TARGET], model.predict_proba(features)[:, 1], n_bins=10)
        assert calibration["fraction_positive"] == pytest.approx(list(fraction))
        assert calibration["mean_predicted"] == pytest.approx(list(mean))

    matrices = json.loads(artifact(run_id, "confusion_matrix.json").read_text())
    assert sum(map(sum, matrices["challenger"])) == sum(map(sum, matrices["champion"])) == len(test)


def test_champion_folder_that_does_not_exist_means_no_champion(
        workspace: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, result, _ = evaluate_in_new_run(workspace, monkeypatch, Path("models/no-such-champion"))
    assert "no champion at models/no-such-champion: the folder does not exist" in capsys.readouterr().err
    assert result["champion"] is None and result["champion_uri"] is None
    assert result["challenger"] == pytest.approx(sklearn_metrics(workspace["models"]["challenger"], workspace["test"]))
    assert all(row["champion"] is None and row["delta"] is None for row in result["comparison"])
    logged = MlflowClient().get_run(run_id).data.metrics
    assert not [name for name in logged if name.startswith("champion_")]
    assert {f"test_{name}" for name in evaluate.METRICS} <= set(logged)
    table = artifact(run_id, "comparison.md").read_text().splitlines()
    assert len(table) == 2 + len(evaluate.METRICS) and all(line.endswith("| n/a | n/a |") for line in table[2:])
    curves = json.loads(artifact(run_id, "curves.json").read_text())
    assert curves["champion"] is None and curves["challenger"]["roc"]["fpr"][0] == 0.0
    for name in PLOTS:  # the challenger alone is still plotted
        assert artifact(run_id, name).read_bytes().startswith(PNG_SIGNATURE)


def test_a_challenger_folder_without_a_model_fails_the_job(
        workspace: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(workspace["root"])
    with pytest.raises(SystemExit, match="not an MLflow model folder"):
        evaluate.main(TARGET, CLASSES, ["--data-dir", "data", "--challenger", str(tmp_path),
                                        "--output", str(tmp_path / "out.json")])


def test_plots_are_deterministic(workspace: dict[str, Any], tmp_path: Path) -> None:
    """The same inputs draw the same bytes, so a re-run's artifacts can be compared with a hash."""
    test = workspace["test"]
    features, labels = test.drop(columns=[TARGET]), test[TARGET]
    models = {role: evaluate.score(model, features, labels, CLASSES) for role, model in workspace["models"].items()}
    points = {role: evaluate.curves(scored, labels, CLASSES[-1]) for role, scored in models.items()}
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        assert evaluate.write_plots(folder, models, points, CLASSES) == ["confusion_matrix.png", "roc.png",
                                                                         "calibration.png"]
    for name in PLOTS:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_module_imports_without_matplotlib() -> None:
    """Plotting is imported lazily: a fresh interpreter importing the job does not load matplotlib."""
    probe = "import sys, operators.jobs.evaluate; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "False"
