"""The trained MLP as an MLflow pyfunc model that needs only numpy: the inference server has no torch.

Logged by ``train.py`` as a model from code (``python_model=<this file>``): MLflow copies this file
into the model and, on loading, runs it under a fresh module name, so two versions served by one
MLServer process each use their own copy and nothing is unpickled. The weights and the
standardisation statistics travel as the artifact ``weights`` (an ``.npz`` without pickled objects).

``predict`` returns class labels (0 malignant, 1 benign) as int64, like the scikit-learn pipeline;
``predict_proba`` and ``feature_names_in_`` follow scikit-learn too, for ``evaluate.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

WEIGHTS = "weights"  # the artifact's key in the model


def save_weights(path: Path, columns: list[str], mean: np.ndarray, scale: np.ndarray,
                 layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``layers``: (weight ``[out, in]``, bias ``[out]``) per linear layer, ReLU between, one logit out."""
    arrays = {"columns": np.array(columns, dtype=str), "mean": mean, "scale": scale}
    for index, (weight, bias) in enumerate(layers):
        arrays[f"weight_{index}"], arrays[f"bias_{index}"] = weight, bias
    np.savez(path, **arrays)


class MLPClassifier(PythonModel):
    """Standardise, then linear layers with ReLU between them, then a sigmoid on the single logit."""

    def load_context(self, context: Any) -> None:
        self.load(context.artifacts[WEIGHTS])

    def load(self, path: str | Path) -> MLPClassifier:
        with np.load(path, allow_pickle=False) as arrays:
            self.feature_names_in_ = arrays["columns"].astype(object)
            self.mean = arrays["mean"].astype(np.float64)
            self.scale = arrays["scale"].astype(np.float64)
            count = sum(1 for name in arrays.files if name.startswith("weight_"))
            self.layers = [(arrays[f"weight_{index}"].astype(np.float64), arrays[f"bias_{index}"].astype(np.float64))
                           for index in range(count)]
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """``[n, 2]``: probabilities of label 0 and label 1, columns taken by name."""
        values = (features[list(self.feature_names_in_)].to_numpy(dtype=np.float64) - self.mean) / self.scale
        for weight, bias in self.layers[:-1]:
            values = np.maximum(values @ weight.T + bias, 0.0)
        weight, bias = self.layers[-1]
        logit = (values @ weight.T + bias)[:, 0]
        positive = np.exp(-np.logaddexp(0.0, -logit))  # sigmoid without overflow
        return np.column_stack([1.0 - positive, positive])

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Labels; no ``context`` argument (MLflow >= 2.20), so it is also scikit-learn's ``predict``."""
        return (self.predict_proba(model_input)[:, 1] >= 0.5).astype(np.int64)


mlflow.models.set_model(MLPClassifier())
