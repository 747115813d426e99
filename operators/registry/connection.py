"""MLflow client settings from an Airflow connection, without importing mlflow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def tracking_env(conn_id: str = "factory_mlflow") -> dict[str, str]:
    """``MLFLOW_TRACKING_*`` variables for a connection (host, port, login, password)."""
    from airflow.sdk.bases.hook import BaseHook

    connection = BaseHook.get_connection(conn_id)
    env = {"MLFLOW_TRACKING_URI": f"{connection.schema or 'http'}://{connection.host}:{connection.port}"}
    if connection.login:
        env["MLFLOW_TRACKING_USERNAME"] = connection.login
        env["MLFLOW_TRACKING_PASSWORD"] = connection.password or ""
    return env


@contextmanager
def mlflow_tracking(conn_id: str = "factory_mlflow") -> Iterator[None]:
    """Point mlflow at the connection's server for the duration of the block."""
    env = tracking_env(conn_id)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
