"""Extra links on pipeline tasks."""

from __future__ import annotations

from operators.stored_link import StoredLink


class ValidationReportLink(StoredLink):
    name = "Validation report"


class MlflowRunLink(StoredLink):
    name = "MLflow run"


class ModelVersionLink(StoredLink):
    name = "Model version"


def airflow_base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://127.0.0.1:8080").rstrip("/")


def mlflow_base_url(conn_id: str) -> str:
    from airflow.sdk.bases.hook import BaseHook

    connection = BaseHook.get_connection(conn_id)
    return f"{connection.schema or 'http'}://{connection.host}:{connection.port}"
