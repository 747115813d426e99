"""Evaluate a challenger model, and the current champion if there is one, on the held-out test split.

Runs inside a Slurm job (job-runtime Python, no Airflow). Both models are scored on the same rows so
the orchestrator can decide on promotion from one JSON file; the metrics also go to the MLflow run
the orchestrator created (``MLFLOW_RUN_ID``). Usage::

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
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

TARGET = "diagnosis"
LABELS = [0, 1]  # 0 malignant, 1 benign (scikit-learn's encoding); metrics treat 1 as positive


def load_champion(uri: str) -> Any | None:
    """The champion model, or None when there is none yet: the first model has nothing to beat."""
    try:
        return mlflow.sklearn.load_model(uri)
    except MlflowException as error:
        if not champion_is_missing(error, uri):
            raise  # network, auth, a broken artifact: a real failure
        print(f"no champion at {uri}: {error.message}", file=sys.stderr)
        return None


def champion_is_missing(error: MlflowException, uri: str) -> bool:
    """Whether ``error`` only says that the model or its alias does not exist (yet).

    A model without the alias is INVALID_PARAMETER_VALUE "alias ... not found". A model never
    registered is RESOURCE_DOES_NOT_EXIST, except behind MLflow's basic-auth app, which answers an
    alias lookup on an unknown model with 403: ask the registry to tell that apart from a real 403.
    """
    message = str(error.message).lower()
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    if error.error_code == "INVALID_PARAMETER_VALUE":
        return "alias" in message and "not found" in message
    match = re.match(r"models:/(?P<name>[^/@]+)@", uri)
    if error.error_code == "PERMISSION_DENIED" and match:
        try:
            MlflowClient().get_registered_model(match["name"])
        except MlflowException as lookup:
            return lookup.error_code == "RESOURCE_DOES_NOT_EXIST"
    return False


def score(model: Any, features: pd.DataFrame, labels: pd.Series) -> tuple[dict[str, float], list[list[int]]]:
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
    return metrics, confusion_matrix(labels, predicted, labels=LABELS).tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding test.csv")
    parser.add_argument("--challenger", required=True, help="model URI, e.g. runs:/<run_id>/model")
    parser.add_argument("--champion", help="model URI, e.g. models:/<name>@champion; missing means none")
    parser.add_argument("--output", type=Path, required=True, help="where to write the results JSON")
    args = parser.parse_args(argv)

    test = pd.read_csv(args.data_dir / "test.csv")
    if TARGET not in test.columns:
        sys.exit(f"{args.data_dir / 'test.csv'}: no {TARGET!r} column")
    features, labels = test.drop(columns=[TARGET]), test[TARGET]

    challenger, challenger_matrix = score(mlflow.sklearn.load_model(args.challenger), features, labels)
    champion_model = load_champion(args.champion) if args.champion else None
    champion, champion_matrix = score(champion_model, features, labels) if champion_model is not None else (None, None)

    with mlflow.start_run():  # MLFLOW_RUN_ID: the run the orchestrator created
        mlflow.log_param("n_test_rows", len(test))
        mlflow.log_metrics({f"test_{name}": value for name, value in challenger.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion_test_{name}": value for name, value in champion.items()})
        mlflow.log_dict({"labels": LABELS, "rows": "true label", "columns": "predicted label",
                         "challenger": challenger_matrix, "champion": champion_matrix},
                        "evaluation/confusion_matrix.json")

    result = {"challenger": challenger, "champion": champion,
              "champion_uri": args.champion if champion is not None else None, "n_test_rows": len(test)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"evaluated: challenger test_roc_auc={challenger['roc_auc']:.4f} "
          f"champion={'none' if champion is None else format(champion['roc_auc'], '.4f')}")


if __name__ == "__main__":
    main()
