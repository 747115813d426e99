"""Airflow side of Slurm: a hook that builds a client from an Airflow connection."""

from __future__ import annotations

from airflow.sdk.bases.hook import BaseHook

from operators.slurm.rest import SlurmRestClient


class SlurmRestHook(BaseHook):
    """Connection: host/port/schema of slurmrestd, login = Slurm user, password = JWT.

    Extra: ``cluster``, ``account`` (default account for jobs), ``api_version``.
    """

    conn_name_attr = "slurm_conn_id"
    default_conn_name = "factory_slurm_local"
    conn_type = "http"
    hook_name = "Slurm (slurmrestd)"

    def __init__(self, slurm_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.slurm_conn_id = slurm_conn_id

    def get_conn(self) -> SlurmRestClient:
        connection = self.get_connection(self.slurm_conn_id)
        extra = connection.extra_dejson
        base_url = f"{connection.schema or 'http'}://{connection.host}:{connection.port}"
        return SlurmRestClient(base_url, connection.login, connection.password,
                               api_version=extra.get("api_version", "v0.0.38"))

    @property
    def default_account(self) -> str | None:
        return self.get_connection(self.slurm_conn_id).extra_dejson.get("account")
