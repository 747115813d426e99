"""Train the breast-cancer classifier inside a Slurm job (job-runtime Python, no Airflow).

The orchestrator creates the MLflow run beforehand and passes it as ``MLFLOW_RUN_ID``, so the job
only logs into it: params, train metrics and the model. Usage::

    python train.py --data-dir DIR --params PARAMS_JSON_FILE

``DIR/train.csv`` holds the features and the ``diagnosis`` label (0 malignant, 1 benign).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import mlflow
import mlflow.sklearn
import pandas as pd
import sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

TARGET = "diagnosis"
DEFAULTS: dict[str, Any] = {"C": 1.0, "max_iter": 1000, "seed": 42}
CV_FOLDS = 5


def usage_error(message: str) -> NoReturn:
    """Exit 2, like argparse: the job's inputs are wrong, retrying will not help."""
    print(f"--params: {message}", file=sys.stderr)
    sys.exit(2)


def load_params(path: Path) -> dict[str, Any]:
    """Defaults overlaid with the file's values; a typo in a key is an error, not a silent default."""
    given = json.loads(path.read_text())
    if not isinstance(given, dict):
        usage_error(f"expected a JSON object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        usage_error(f"unknown keys {unknown}; valid keys are {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **given}
    for name in ("max_iter", "seed"):
        if isinstance(params[name], bool) or not isinstance(params[name], int):
            usage_error(f"{name} must be an integer, got {params[name]!r}")
    if isinstance(params["C"], bool) or not isinstance(params["C"], int | float):
        usage_error(f"C must be a number, got {params['C']!r}")
    params["C"] = float(params["C"])
    return params


def build_model(params: dict[str, Any]) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=params["max_iter"],
                                                              random_state=params["seed"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding train.csv")
    parser.add_argument("--params", type=Path, required=True, help="JSON file: C, max_iter, seed (all optional)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    train = pd.read_csv(args.data_dir / "train.csv")
    if TARGET not in train.columns:
        sys.exit(f"{args.data_dir / 'train.csv'}: no {TARGET!r} column")
    features, labels = train.drop(columns=[TARGET]), train[TARGET]

    # sklearn validates the params at fit time (e.g. C <= 0) and its error ends the job non-zero
    model = build_model(params).fit(features, labels)
    train_accuracy = float(model.score(features, labels))
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=params["seed"])
    cv_roc_auc = float(cross_val_score(build_model(params), features, labels, cv=folds, scoring="roc_auc").mean())

    with mlflow.start_run() as run:  # MLFLOW_RUN_ID: the run the orchestrator created
        mlflow.log_params({**params, "n_train_rows": len(train), "n_features": features.shape[1]})
        mlflow.log_metrics({"train_accuracy": train_accuracy, "cv_roc_auc": cv_roc_auc})
        mlflow.sklearn.log_model(
            model, name="model",
            signature=infer_signature(features, model.predict(features)),
            input_example=features.iloc[:2],
            # explicit requirements: inferring them would re-import and time the model, slowly
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"],
        )
    print(f"trained model: run_id={run.info.run_id} train_accuracy={train_accuracy:.4f}")


if __name__ == "__main__":
    main()
