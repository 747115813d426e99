"""Clients of the platform's Airflow connections: S3 (boto3 through the Amazon provider), DVC's remote
settings, MLflow's client settings (without importing mlflow), and the environment a Slurm job gets for a
connection. One place for the task code, the steward
review, the plugin pages and the Slurm operator; Airflow is imported when a client is made."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from operators.connections import MLFLOW_CONN, S3_CONN


def s3_client(conn_id: str = S3_CONN) -> Any:
    """boto3 S3 client of an Airflow connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def dvc_remote_config(conn_id: str = S3_CONN) -> dict[str, str]:
    """The S3 connection's keys for DVC: pinning a sharded folder reads its listing (metadata) from the remote."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    credentials = S3Hook(aws_conn_id=conn_id).get_credentials()
    return {"access_key_id": credentials.access_key, "secret_access_key": credentials.secret_key}


def credentials_env(conn_id: str) -> dict[str, str]:
    """The environment a job needs to use the service behind a connection: ``AWS_*`` for an S3 (``aws``)
    connection, ``MLFLOW_TRACKING_*`` for an MLflow (``http``) one."""
    from airflow.sdk.bases.hook import BaseHook

    connection = BaseHook.get_connection(conn_id)
    if connection.conn_type == "aws":
        extra = connection.extra_dejson
        env = {"AWS_ACCESS_KEY_ID": connection.login or "", "AWS_SECRET_ACCESS_KEY": connection.password or "",
               "AWS_DEFAULT_REGION": extra.get("region_name", "us-east-1")}
        if extra.get("endpoint_url"):
            env["AWS_ENDPOINT_URL"] = extra["endpoint_url"]
        return env
    return tracking_env(conn_id)


def tracking_env(conn_id: str = MLFLOW_CONN) -> dict[str, str]:
    """``MLFLOW_TRACKING_*`` variables for a connection (host, port, login, password)."""
    from airflow.sdk.bases.hook import BaseHook

    connection = BaseHook.get_connection(conn_id)
    env = {"MLFLOW_TRACKING_URI": f"{connection.schema or 'http'}://{connection.host}:{connection.port}",
           "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # no emoji lines in task logs: the links are there
    if connection.login:
        env["MLFLOW_TRACKING_USERNAME"] = connection.login
        env["MLFLOW_TRACKING_PASSWORD"] = connection.password or ""
    return env


@contextmanager
def mlflow_tracking(conn_id: str = MLFLOW_CONN) -> Iterator[None]:
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
