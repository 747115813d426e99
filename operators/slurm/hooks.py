"""Airflow side of Slurm: the ``slurm`` connection type and a hook that turns it into a transport."""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.hook import BaseHook

from operators.provider import SLURM_CONNECTION_FIELDS
from operators.slurm.model import SlurmError
from operators.slurm.shared_status import SharedStatusTransport
from operators.slurm.transport import SlurmTransport
from operators.slurm.transports import NoFileChannel, make_transport

EXTRA_FIELDS = {name: field["description"] for name, field in SLURM_CONNECTION_FIELDS.items()}
SSH_SETTINGS = ("key_file", "known_hosts", "control_dir", "ssh_host", "ssh_port", "ssh_user")


class SlurmHook(BaseHook):
    """Connection fields by transport:

    - ``local``: login = the Slurm user (``runuser`` is used when the worker runs as root).
    - ``ssh``: host, port, login; extra ``key_file`` and ``known_hosts`` (host keys are always checked).
    - ``rest``: host, port, schema of slurmrestd; login = Slurm user, password = JWT.
    - ``pyslurm``: login = the Slurm user; pyslurm must be built against the site's libslurm.

    And how job files reach the cluster, extra ``files``: ``shared`` (implied by ``local``) or ``ssh``
    (implied by ``ssh``; on other transports with ``ssh_host``, ``ssh_port``, ``ssh_user``). ``rest``
    and ``pyslurm`` connections must set it.
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

    def shared_status_transport(self, max_age_s: float) -> SharedStatusTransport:
        """The transport, with its status answer shared by every process on this host that waits on the same
        cluster as the same user (triggerers, connections to one cluster, tasks waiting in workers)."""
        return SharedStatusTransport(self.get_transport(), self.settings.get("cluster") or self.slurm_conn_id,
                                     self.job_user, max_age_s)

    def get_conn(self) -> SlurmTransport:
        return self.get_transport()

    def get_transport(self) -> SlurmTransport:
        settings = self.settings
        try:
            return make_transport(settings["transport"], files=settings.get("files"), **self._channel_settings())
        except NoFileChannel as error:
            raise NoFileChannel(f"connection {self.slurm_conn_id!r}: {error}") from None

    def _channel_settings(self) -> dict[str, Any]:
        """Everything the connection tells the channels; each takes what it knows."""
        connection, settings = self.connection, self.settings
        chosen = {"user": connection.login, "cluster": settings.get("cluster"),
                  **{key: settings[key] for key in SSH_SETTINGS if key in settings}}
        if "timeout_s" in settings:
            chosen["timeout_s"] = float(settings["timeout_s"])
        if settings["transport"] == "rest":
            chosen.update(self._slurmrestd())
        if settings["transport"] == "ssh":
            chosen.update(host=connection.host, port=connection.port or 22)
        return chosen

    def _slurmrestd(self) -> dict[str, Any]:
        connection = self.connection
        return {"base_url": f"{connection.schema or 'http'}://{connection.host}:{connection.port or 6820}",
                "token": connection.password, "api_version": self.settings.get("api_version", "auto")}

    def test_connection(self) -> tuple[bool, str]:
        """What the connection form's Test button shows: the Slurm version and the way in."""
        try:
            return True, self.get_transport().describe()
        except Exception as error:  # the form shows the message; the error kinds are many (ssh, HTTP, Slurm)
            return False, f"{type(error).__name__}: {error}"
