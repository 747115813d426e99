"""Evaluate a binary classifier, and the current champion if there is one, on the held-out test split.

Runs inside a Slurm job (job-runtime Python: no Airflow). Both models are scored on the same rows so
the orchestrator can decide on promotion from one JSON file; the metrics also go to the MLflow run the
orchestrator created (``MLFLOW_RUN_ID``), with what a reviewer needs to check the decision under
``evaluation/``: a comparison table, confusion matrices, ROC and calibration curves (PNG, and their
points as JSON). Any MLflow model with ``predict_proba`` works: a scikit-learn model, or a pyfunc
``PythonModel`` (e.g. numpy weights of a PyTorch model). A model is a URI (``runs:/``, ``models:/``)
or a local MLflow model folder (offline sites fetch models into the job's folder). A pipeline's
``evaluate.py`` calls :func:`main` with its label column; usage::

    python evaluate.py --data-dir DIR --challenger MODEL [--champion MODEL] --output OUT_JSON

A champion that is not registered yet, whose alias is not set yet, or
given as a local folder that does not exist, means "no champion".
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from operators.registry.aliases import version_by_alias
from operators.registry.model_card import comparison_rows, comparison_table

METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall")  # all higher-is-better: the gate assumes so
CALIBRATION_BINS = 10
ARTIFACT_DIR = "evaluation"
PLOT_DPI = 100


@dataclass(frozen=True)
class Scored:
    """One model's results on the test rows; the probabilities are kept for the curves."""

    metrics: dict[str, float]
    matrix: list[list[int]]
    probabilities: np.ndarray


def is_local(model: str) -> bool:
    """A model given as a folder path, not a URI: no ``scheme:`` prefix (one-letter schemes are
    drive letters, not URIs)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", model) is None


def champion_exists(uri: str) -> bool:
    """Whether the champion is there: a local folder exists, ``models:/<name>@<alias>`` resolves;
    other URI forms are assumed to exist.

    Asked of the registry before loading, so that only "not registered yet" and "alias not set yet"
    mean "no champion" (:func:`operators.registry.aliases.version_by_alias`): a champion whose artifacts
    are missing, or a 401/403, must fail the job, and ``load_model`` reports those with the same
    RESOURCE_DOES_NOT_EXIST/403 codes. A local folder that exists but holds no MLflow model fails the job
    in :func:`load` (a half-fetched champion is an error, not "no champion").
    """
    if is_local(uri):
        if not Path(uri).exists():
            print(f"no champion at {uri}: the folder does not exist", file=sys.stderr)
            return False
        return True
    match = re.fullmatch(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)", uri)
    if match is None:
        return True
    if version_by_alias(MlflowClient(), match["name"], match["alias"]) is None:
        print(f"no champion at {uri}: the model or its alias is not registered yet", file=sys.stderr)
        return False
    return True


def load(uri: str) -> Any:
    """The model behind a URI or local folder, with scikit-learn's ``predict``/``predict_proba``: the
    estimator of a scikit-learn model, the ``PythonModel`` of a pyfunc (``mlp_model.MLPClassifier``)."""
    if is_local(uri) and not (Path(uri) / "MLmodel").is_file():
        sys.exit(f"{uri}: not an MLflow model folder (no MLmodel file)")
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = pyfunc.get_raw_model() if "sklearn" in pyfunc.metadata.flavors else pyfunc.unwrap_python_model()
    if not callable(getattr(model, "predict_proba", None)):
        sys.exit(f"{uri}: the model has no predict_proba ({type(model).__name__}), roc_auc needs probabilities")
    return model


def score(model: Any, features: pd.DataFrame, labels: pd.Series, classes: list[Any]) -> Scored:
    """Test metrics, confusion matrix and positive-class probabilities; columns follow the model's
    training order when it knows it."""
    if hasattr(model, "feature_names_in_"):
        features = features[list(model.feature_names_in_)]
    predicted = model.predict(features)
    probabilities = np.asarray(model.predict_proba(features))[:, 1]
    metrics = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted)),
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted)),
    }
    return Scored(metrics, confusion_matrix(labels, predicted, labels=classes).tolist(), probabilities)


def _finite(values: np.ndarray) -> list[float | None]:
    """JSON-safe floats: roc_curve's first threshold is +inf, which strict JSON cannot hold."""
    return [float(value) if math.isfinite(value) else None for value in values]


def curves(scored: Scored, labels: pd.Series, positive: Any) -> dict[str, Any]:
    """ROC and calibration points of one model, for a UI or model card that draws its own plots."""
    fpr, tpr, thresholds = roc_curve(labels, scored.probabilities, pos_label=positive)
    prob_true, prob_pred = calibration_curve(labels, scored.probabilities, pos_label=positive,
                                             n_bins=CALIBRATION_BINS, strategy="uniform")
    return {
        "roc": {"fpr": _finite(fpr), "tpr": _finite(tpr), "thresholds": _finite(thresholds),
                "auc": scored.metrics["roc_auc"]},
        "calibration": {"mean_predicted": _finite(prob_pred), "fraction_positive": _finite(prob_true),
                        "n_bins": CALIBRATION_BINS, "strategy": "uniform",
                        "brier": float(brier_score_loss(labels, scored.probabilities, pos_label=positive))},
    }


def write_plots(folder: Path, models: dict[str, Scored], points: dict[str, dict[str, Any]],
                classes: list[Any]) -> list[str]:
    """Confusion matrices, ROC and calibration curves as small PNGs; returns the file names.

    matplotlib is imported here, not at module level, so importing this module (and the jobs that do
    not plot) stays fast; figures are drawn on the Agg canvas directly (no pyplot: no display, no
    global figure registry to leak memory), without the software-version metadata so the same
    inputs give the same bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(figure: Figure, name: str) -> str:
        FigureCanvasAgg(figure)
        figure.savefig(folder / name, dpi=PLOT_DPI, metadata={"Software": None})
        return name

    names = []
    figure = Figure(figsize=(3.6 * len(models), 3.4), layout="constrained")
    for axes, (role, scored) in zip(figure.subplots(1, len(models), squeeze=False)[0], models.items(), strict=True):
        matrix = np.asarray(scored.matrix)
        axes.imshow(matrix, cmap="Blues", vmin=0)
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black")
        axes.set(title=role, xlabel="predicted", ylabel="true", xticks=range(len(classes)),
                 yticks=range(len(classes)), xticklabels=[str(c) for c in classes],
                 yticklabels=[str(c) for c in classes])
    names.append(save(figure, "confusion_matrix.png"))

    figure = Figure(figsize=(4.2, 4.0), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for role, point in points.items():
        axes.plot(point["roc"]["fpr"], point["roc"]["tpr"], label=f"{role} (AUC {point['roc']['auc']:.4f})")
    axes.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate",
             xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    axes.legend(loc="lower right", fontsize="small")
    names.append(save(figure, "roc.png"))

    figure = Figure(figsize=(4.2, 4.0), layout="constrained")
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for role, point in points.items():
        calibration = point["calibration"]
        axes.plot(calibration["mean_predicted"], calibration["fraction_positive"], marker="o",
                  label=f"{role} (Brier {calibration['brier']:.4f})")
    axes.set(title=f"Calibration ({CALIBRATION_BINS} bins)", xlabel="mean predicted probability",
             ylabel="fraction of positives", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    axes.legend(loc="upper left", fontsize="small")
    names.append(save(figure, "calibration.png"))
    return names


def main(target: str, classes: list[Any], argv: list[str] | None = None) -> None:
    """``target``: the label column of test.csv; ``classes``: its two values, the positive one last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding test.csv")
    parser.add_argument("--challenger", required=True,
                        help="model URI (e.g. runs:/<run_id>/model) or local MLflow model folder")
    parser.add_argument("--champion", help="model URI (e.g. models:/<name>@champion) or local MLflow model folder; "
                                           "missing means none")
    parser.add_argument("--output", type=Path, required=True, help="where to write the results JSON")
    args = parser.parse_args(argv)

    test = pd.read_csv(args.data_dir / "test.csv")
    if target not in test.columns:
        sys.exit(f"{args.data_dir / 'test.csv'}: no {target!r} column")
    features, labels = test.drop(columns=[target]), test[target]

    models = {"challenger": score(load(args.challenger), features, labels, classes)}
    if args.champion and champion_exists(args.champion):
        models["champion"] = score(load(args.champion), features, labels, classes)
    challenger = models["challenger"].metrics
    champion = models["champion"].metrics if "champion" in models else None
    rows = comparison_rows(challenger, champion)  # metrics only: thresholds are the gate's
    points = {role: curves(scored, labels, classes[-1]) for role, scored in models.items()}

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "confusion_matrix.json").write_text(json.dumps(
            {"labels": classes, "rows": "true label", "columns": "predicted label",
             "challenger": models["challenger"].matrix,
             "champion": models["champion"].matrix if champion is not None else None}, indent=2))
        (folder / "curves.json").write_text(json.dumps(
            {"positive_label": classes[-1], "challenger": points["challenger"], "champion": points.get("champion")},
            indent=2, allow_nan=False))
        (folder / "comparison.md").write_text(comparison_table(rows, "champion", "challenger") + "\n")
        write_plots(folder, models, points, classes)
        artifacts = sorted(f"{ARTIFACT_DIR}/{path.name}" for path in folder.iterdir())
        with mlflow.start_run():  # MLFLOW_RUN_ID: the run the orchestrator created
            mlflow.log_param("n_test_rows", len(test))
            mlflow.log_metrics({f"test_{name}": value for name, value in challenger.items()})
            if champion is not None:
                mlflow.log_metrics({f"champion_test_{name}": value for name, value in champion.items()})
            mlflow.log_artifacts(scratch, ARTIFACT_DIR)

    result = {"challenger": challenger, "champion": champion,
              "champion_uri": args.champion if champion is not None else None, "n_test_rows": len(test),
              "comparison": rows, "artifacts": artifacts}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"evaluated: challenger test_roc_auc={challenger['roc_auc']:.4f} "
          f"champion={'none' if champion is None else format(champion['roc_auc'], '.4f')}")
