"""Extra links on pipeline tasks. Each task stores its full URL in XCom under the link's key."""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink


class _StoredLink(BaseOperatorLink):
    def get_link(self, operator, *, ti_key) -> str:
        from airflow.providers.common.compat.sdk import XCom

        return XCom.get_value(key=self.xcom_key, ti_key=ti_key) or ""

    @classmethod
    def store(cls, context, url: str) -> None:
        context["ti"].xcom_push(key=cls().xcom_key, value=url)


class ValidationReportLink(_StoredLink):
    name = "Validation report"


class MlflowRunLink(_StoredLink):
    name = "MLflow run"


class ModelVersionLink(_StoredLink):
    name = "Model version"


def airflow_base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://127.0.0.1:8080").rstrip("/")


def mlflow_base_url(conn_id: str) -> str:
    from airflow.sdk.bases.hook import BaseHook

    connection = BaseHook.get_connection(conn_id)
    return f"{connection.schema or 'http'}://{connection.host}:{connection.port}"
