"""Airflow side of Slurm: the ``slurm`` connection type and a hook that turns it into a transport."""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.hook import BaseHook

from operators.provider import SLURM_CONNECTION_FIELDS
from operators.slurm.model import SlurmError
from operators.slurm.transport import SlurmTransport, make_transport, transport_kinds

EXTRA_FIELDS = {name: field["description"] for name, field in SLURM_CONNECTION_FIELDS.items()}


class SlurmHook(BaseHook):
    """Connection fields by transport:

    - ``local``: login = the Slurm user (``runuser`` is used when the worker runs as root).
    - ``ssh``: host, port, login; extra ``key_file`` and ``known_hosts`` (host keys are always checked).
    - ``rest``: host, port, schema of slurmrestd; login = Slurm user, password = JWT.
    - ``pyslurm``: login = the Slurm user; pyslurm must be built against the site's libslurm.
    """

    conn_name_attr = "slurm_conn_id"
    default_conn_name = "factory_slurm_local"
    conn_type = "slurm"
    hook_name = "Slurm"

    def __init__(self, slurm_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.slurm_conn_id = slurm_conn_id
        self._connection: Any = None

    @property
    def connection(self) -> Any:
        if self._connection is None:
            self._connection = self.get_connection(self.slurm_conn_id)
        return self._connection

    @property
    def settings(self) -> dict[str, Any]:
        """The connection's extra, checked: unknown keys fail with the list of valid ones."""
        prefix = f"extra__{self.conn_type}__"  # older forms store fields prefixed; blank fields mean unset
        extra = {key.removeprefix(prefix): value for key, value in self.connection.extra_dejson.items()
                 if value not in (None, "")}
        unknown = sorted(set(extra) - set(EXTRA_FIELDS))
        if unknown:
            valid = "\n".join(f"  {key}: {meaning}" for key, meaning in EXTRA_FIELDS.items())
            raise SlurmError(f"connection {self.slurm_conn_id!r}: unknown extra field(s) {', '.join(unknown)}; "
                             f"valid fields:\n{valid}")
        extra.setdefault("transport", "rest")
        return extra

    @property
    def job_user(self) -> str | None:
        return self.connection.login

    def get_conn(self) -> SlurmTransport:
        return self.get_transport()

    def get_transport(self) -> SlurmTransport:
        connection, settings = self.connection, self.settings
        kind = settings["transport"]
        timeout = {"timeout_s": float(settings["timeout_s"])} if "timeout_s" in settings else {}
        if kind == "rest":
            base_url = f"{connection.schema or 'http'}://{connection.host}:{connection.port or 6820}"
            return make_transport(kind, base_url=base_url, user=connection.login, token=connection.password,
                                  api_version=settings.get("api_version", "auto"), **timeout)
        if kind == "ssh":
            return make_transport(kind, host=connection.host, user=connection.login, port=connection.port or 22,
                                  key_file=settings.get("key_file"), known_hosts=settings.get("known_hosts"),
                                  control_dir=settings.get("control_dir"), cluster=settings.get("cluster"),
                                  **timeout)
        if kind not in transport_kinds():
            make_transport(kind)  # raises with the list of valid transports
        return make_transport(kind, user=connection.login, cluster=settings.get("cluster"), **timeout)

    def test_connection(self) -> tuple[bool, str]:
        """What the connection form's Test button shows: the Slurm version and the way in."""
        try:
            return True, self.get_transport().describe()
        except Exception as error:  # the form shows the message; the error kinds are many (ssh, HTTP, Slurm)
            return False, f"{type(error).__name__}: {error}"
