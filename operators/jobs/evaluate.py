"""Evaluate a binary classifier, and the current champion if there is one, on the held-out test split.

Runs inside a Slurm job (job-runtime Python: no Airflow). Both models are scored on the same rows so
the orchestrator can decide on promotion from one JSON file; the metrics also go to the MLflow run the
orchestrator created (``MLFLOW_RUN_ID``). Any MLflow model with ``predict_proba`` works: a
scikit-learn model, or a pyfunc ``PythonModel`` (e.g. numpy weights of a PyTorch model). A pipeline's
``evaluate.py`` calls :func:`main` with its label column; usage::

    python evaluate.py --data-dir DIR --challenger MODEL_URI [--champion MODEL_URI] --output OUT_JSON
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score


def champion_exists(uri: str) -> bool:
    """Whether ``models:/<name>@<alias>`` resolves; other URI forms are assumed to exist.

    Asked of the registry before loading, so that only "not registered yet" and "alias not set yet"
    mean "no champion": a champion whose artifacts are missing, or a 401/403, must fail the job,
    and ``load_model`` reports those with the same RESOURCE_DOES_NOT_EXIST/403 codes. The model is
    looked up first because MLflow's basic-auth app answers an alias lookup on an unknown model with
    403, not 404.
    """
    match = re.fullmatch(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)", uri)
    if match is None:
        return True
    client = MlflowClient()
    try:
        client.get_registered_model(match["name"])
        client.get_model_version_by_alias(match["name"], match["alias"])
    except MlflowException as error:
        message = str(error.message).lower()
        alias_missing = error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message
        if error.error_code == "RESOURCE_DOES_NOT_EXIST" or alias_missing:
            print(f"no champion at {uri}: {error.message}", file=sys.stderr)
            return False
        raise
    return True


def load(uri: str) -> Any:
    """The model behind a URI, with scikit-learn's ``predict``/``predict_proba``: the estimator of a
    scikit-learn model, the ``PythonModel`` of a pyfunc (``mlp_model.MLPClassifier``)."""
    pyfunc = mlflow.pyfunc.load_model(uri)
    model = pyfunc.get_raw_model() if "sklearn" in pyfunc.metadata.flavors else pyfunc.unwrap_python_model()
    if not callable(getattr(model, "predict_proba", None)):
        sys.exit(f"{uri}: the model has no predict_proba ({type(model).__name__}), roc_auc needs probabilities")
    return model


def score(model: Any, features: pd.DataFrame, labels: pd.Series,
          classes: list[Any]) -> tuple[dict[str, float], list[list[int]]]:
    """Test metrics and confusion matrix; columns follow the model's training order when it knows it."""
    if hasattr(model, "feature_names_in_"):
        features = features[list(model.feature_names_in_)]
    predicted = model.predict(features)
    metrics = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted)),
        "roc_auc": float(roc_auc_score(labels, model.predict_proba(features)[:, 1])),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted)),
    }
    return metrics, confusion_matrix(labels, predicted, labels=classes).tolist()


def main(target: str, classes: list[Any], argv: list[str] | None = None) -> None:
    """``target``: the label column of test.csv; ``classes``: its two values, the positive one last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding test.csv")
    parser.add_argument("--challenger", required=True, help="model URI, e.g. runs:/<run_id>/model")
    parser.add_argument("--champion", help="model URI, e.g. models:/<name>@champion; missing means none")
    parser.add_argument("--output", type=Path, required=True, help="where to write the results JSON")
    args = parser.parse_args(argv)

    test = pd.read_csv(args.data_dir / "test.csv")
    if target not in test.columns:
        sys.exit(f"{args.data_dir / 'test.csv'}: no {target!r} column")
    features, labels = test.drop(columns=[target]), test[target]

    challenger, challenger_matrix = score(load(args.challenger), features, labels, classes)
    champion, champion_matrix = None, None
    if args.champion and champion_exists(args.champion):
        champion, champion_matrix = score(load(args.champion), features, labels, classes)

    with mlflow.start_run():  # MLFLOW_RUN_ID: the run the orchestrator created
        mlflow.log_param("n_test_rows", len(test))
        mlflow.log_metrics({f"test_{name}": value for name, value in challenger.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test_{name}": value for name, value in champion.items()})
        mlflow.log_dict({"labels": classes, "rows": "true label", "columns": "predicted label",
                         "challenger": challenger_matrix, "champion": champion_matrix},
                        "evaluation/confusion_matrix.json")

    result = {"challenger": challenger, "champion": champion,
              "champion_uri": args.champion if champion is not None else None, "n_test_rows": len(test)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"evaluated: challenger test_roc_auc={challenger['roc_auc']:.4f} "
          f"champion={'none' if champion is None else format(champion['roc_auc'], '.4f')}")

