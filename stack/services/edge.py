"""An Airflow Edge worker on a site's login node (production profile), as an HPC centre can allow one.

The worker runs as the site's job user inside the login node's namespaces and reaches nothing but the API
server, over HTTP, through a relay on the host's end of the site's bridge (the node has no other route, and
the API server listens on the loopback only). It takes its site's queue, runs those tasks on the login node
(the Slurm steps, with the ``local`` transport) and pushes their logs to the API server.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

from stack.clusters import node as nodes
from stack.process import Supervised, process_started_at
from stack.services.airflow import AIRFLOW_URL, EDGE_EXECUTOR, EDGE_HEARTBEAT_S
from stack.services.common import Service, http_get
from stack.services.sites import SiteCluster, _tcp_answers
from stack.settings import HOST, JOB_USER, PORTS, REPO, StackPaths, StackSecrets

API_RELAY_PORTS = {"a": 18081, "b": 18082}
EDGE_HOME = f"/home/{JOB_USER}/.airflow-edge"  # on the site's shared /home, as a user's own install would be


class EdgeWorker:
    """The relay and the worker of one site whose catalogue entry names an Edge queue."""

    def __init__(self, paths: StackPaths, secrets: StackSecrets, site: SiteCluster, queue: str) -> None:
        self.paths, self.secrets, self.site, self.queue = paths, secrets, site, queue

    @property
    def name(self) -> str:
        return self.site.name("edge-worker")

    @property
    def hostname(self) -> str:
        """The worker's name in Airflow: its login node's."""
        return self.site.site.login.hostname

    @property
    def relay_port(self) -> int:
        return API_RELAY_PORTS[self.site.site.letter]

    @property
    def api_url(self) -> str:
        """The API server as the login node reaches it."""
        return f"http://{self.site.site.host_address.ip}:{self.relay_port}"

    def services(self) -> list[Service]:
        return [self.relay(), self.worker()]

    def relay(self) -> Service:
        """HTTP to the API server and nothing else: a TCP relay on the host's end of the site's bridge."""
        address, port = str(self.site.site.host_address.ip), self.relay_port
        command = ["socat", f"TCP-LISTEN:{port},bind={address},fork,reuseaddr", f"TCP:{HOST}:{PORTS['airflow']}"]
        return Service(self.site.name("airflow-relay"), command, health=lambda: _tcp_answers(address, port),
                       needs=(self.site.name("hosts"),), user="nobody", ports=(port,), url=self.api_url,
                       start_timeout_s=10)

    def env(self) -> dict[str, str]:
        """What the worker knows: the API server's address, the shared JWT secret (edge3 signs the worker's
        requests with it; a real site may use [edge] trusted_jwks_url instead), the DAG files. No database,
        no fernet key, no connections: tasks get those from the API server."""
        api = self.api_url
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": f"/home/{JOB_USER}", "LANG": "C.UTF-8",
            "AIRFLOW_HOME": EDGE_HOME, "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": f"CeleryExecutor,{EDGE_EXECUTOR}",
            "AIRFLOW__EDGE__API_ENABLED": "True", "AIRFLOW__EDGE__API_URL": f"{api}/edge_worker/v1/rpcapi",
            "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": str(EDGE_HEARTBEAT_S), "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1",
            "AIRFLOW__EDGE__PUSH_LOGS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["airflow_jwt_secret"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": f"{EDGE_HOME}/logs", "AIRFLOW__SECRETS__BACKEND": "",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{EDGE_HOME}/unused.db",  # never opened
            "AIRFLOW__API__BASE_URL": AIRFLOW_URL,  # the links tasks store point at the API server as users see it
            # the specs name the dataset registry by it: the pipelines parse here as they do centrally
            "FACTORY_STATE": str(self.paths.state),
        }

    def worker(self) -> Service:
        login = self.site.site.login
        airflow = self.paths.bin("orchestrator", "airflow")
        command = nodes.on_node(self.site.space(login), [
            airflow, "edge", "worker", "--queues", self.queue, "--edge-hostname", self.hostname,
            "--concurrency", "16", "--pid", f"{EDGE_HOME}/worker.pid"], user=self.site.ids(JOB_USER))
        return Service(self.name, command, health=self.health, env=self.env(), prepare=self.prepare,
                       needs=(self.site.name("sshd"), self.site.name("airflow-relay"), "airflow-api"),
                       start_timeout_s=120)

    def prepare(self) -> None:
        """Its home on the site's /home; and, after a worker was killed, its name free again (edge3 refuses a
        second worker of an active name until the liveness check calls the old one unknown)."""
        home = self.site.layout.home / JOB_USER / ".airflow-edge"
        uid, gid = self.site.ids(JOB_USER)
        for folder in (home.parent, home, home / "logs"):
            folder.mkdir(exist_ok=True)
            os.chown(folder, uid, gid)
        (home / "worker.pid").unlink(missing_ok=True)
        deadline = time.monotonic() + EDGE_HEARTBEAT_S * 5 + 60
        while self.registered_state() in ("idle", "running", "starting", "maintenance mode"):
            if time.monotonic() > deadline:
                break  # the worker says why it refuses to start
            time.sleep(2)

    def _workers(self) -> list[dict]:
        token = self._token()
        status, body = http_get(f"http://{HOST}:{PORTS['airflow']}/edge_worker/ui/worker",
                                {"Authorization": f"Bearer {token}"})
        if status != 200:
            raise ConnectionError(f"edge worker list: HTTP {status}")
        return json.loads(body)["workers"]

    def _token(self) -> str:
        import httpx

        try:
            response = httpx.post(f"http://{HOST}:{PORTS['airflow']}/auth/token", timeout=10,
                                  json={"username": "admin", "password": self.secrets["airflow_admin_password"]})
            response.raise_for_status()
        except httpx.HTTPError as error:  # the API server is down or restarting: a state, not a crash
            raise ConnectionError(f"no token from the API server: {error}") from None
        return response.json()["access_token"]

    def registered_state(self) -> str | None:
        """The worker's state as the API server has it (None: never registered, or no answer)."""
        try:
            found = [worker for worker in self._workers() if worker["worker_name"] == self.hostname]
        except (OSError, ValueError, KeyError):
            return None
        return found[0]["state"] if found else None

    def health(self) -> str | None:
        """Up when the API server has heard from the process we started: its registration is newer than it."""
        pid = Supervised(self.name, self.paths.run, self.paths.logs).pid()
        started_at = process_started_at(pid) if pid else None
        if started_at is None:
            return "not running"
        started = datetime.fromtimestamp(started_at, UTC)
        try:
            found = [worker for worker in self._workers() if worker["worker_name"] == self.hostname]
        except (OSError, ValueError, KeyError) as error:
            return f"API server: {error}"
        if not found:
            return f"{self.hostname} has not registered with the API server"
        worker = found[0]
        begun = datetime.fromisoformat(worker["sysinfo"]["worker_start_time"]).replace(tzinfo=UTC)
        if worker["state"] not in ("idle", "running") or begun.timestamp() < started.timestamp() - 1:
            return f"{self.hostname}: {worker['state']} (worker started {begun.isoformat(timespec='seconds')})"
        return None
