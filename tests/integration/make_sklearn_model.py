"""Run with the job-runtime Python: train a small classifier and save it as an MLflow model
folder, the way a training job does, into an MLServer model-repository version folder.

``ARGS: VERSION_DIR MODEL_NAME VERSION [flipped]``: ``flipped`` trains on the inverted labels, so two
versions tell apart by their answers. The model folder gets a serving input example (first 3 rows)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

version_dir, model_name, version = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
features, labels = load_breast_cancer(return_X_y=True)
if sys.argv[4:] == ["flipped"]:
    labels = 1 - labels
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, labels)
mlflow.sklearn.save_model(model, str(version_dir / "model"),
                          signature=infer_signature(features, model.predict(features)),
                          pip_requirements=["scikit-learn", "mlflow"])
(version_dir / "model-settings.json").write_text(json.dumps({
    "name": model_name,
    "implementation": "mlserver_mlflow.MLflowRuntime",
    "parameters": {"uri": "./model", "version": version},
}))
(version_dir / "model" / "serving_input_example.json").write_text(
    json.dumps({"dataframe_split": {"data": features[:3].tolist()}}))
json.dump({"first_rows": features[:3].tolist(), "expected": model.predict(features[:3]).tolist()}, sys.stdout)
