"""The model registry (MLflow). mlflow itself is imported inside functions, never at module top."""
