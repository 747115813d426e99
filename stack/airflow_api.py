"""A small client of Airflow's REST API for the demo, the tests and the benchmarks."""

from __future__ import annotations

import time
from typing import Any

from operators.http_json import JsonClient

FINISHED = {"success", "failed"}

# With SQLite (the local stack's database) a request that reads then writes fails at once when another
# process committed in between (SQLITE_BUSY_SNAPSHOT under WAL); the API server answers 500 "Database
# error". Requests that are safe to repeat are asked again; a POST is never repeated.
REPEATABLE_METHODS = {"GET", "PATCH"}
DATABASE_ERROR_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class AirflowDatabaseError(RuntimeError):
    """The API server's database refused the request (HTTP 500 "Database error")."""


class AirflowAPI:
    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None
        self.http = JsonClient(self.url, RuntimeError, timeout_s=30, secrets=[password])

    @classmethod
    def of_stack(cls, info: dict[str, Any]) -> AirflowAPI:
        """The stack's Airflow as its admin, from the stack's info file (``stack.json``)."""
        airflow = info["airflow"]
        return cls(airflow["url"], airflow["username"], airflow["password"])

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        delays = iter(DATABASE_ERROR_RETRY_DELAYS_S if method in REPEATABLE_METHODS else ())
        while True:
            try:
                return self._request_once(method, path, body, auth)
            except AirflowDatabaseError:
                delay = next(delays, None)
                if delay is None:
                    raise
                time.sleep(delay)

    def _request_once(self, method: str, path: str, body: Any, auth: bool) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"} if auth else {}
        response = self.http.send(method, path, body, headers)
        if response.status_code >= 400:
            database = response.status_code == 500 and b"Database error" in response.content
            failure = AirflowDatabaseError if database else RuntimeError
            raise failure(f"Airflow API {method} {path}: HTTP {response.status_code} {response.content[:300]!r}")
        return self.http.decode(method, path, response)

    def token(self) -> str:
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def raw(self, path: str) -> bytes:
        """A non-JSON page served by the API server (e.g. a plugin page), with the same login."""
        response = self.http.send("GET", path, headers={"Authorization": f"Bearer {self.token()}"})
        if response.status_code >= 400:
            raise self.http.status_error("GET", path, response)
        return response.content

    def patch(self, path: str, body: dict) -> Any:
        return self._request("PATCH", f"/api/v2{path}", body)

    def post(self, path: str, body: dict) -> Any:
        return self._request("POST", f"/api/v2{path}", body)

    def ui_get(self, path: str) -> Any:
        """The UI's own API (e.g. connection form metadata), next to the public /api/v2."""
        return self._request("GET", f"/ui{path}")

    def get(self, path: str) -> Any:
        return self._request("GET", f"/api/v2{path}")

    def wait_for_dag(self, dag_id: str, timeout_s: float = 120) -> None:
        """Wait until the dag-processor has parsed the DAG (a fresh stack parses on start)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.get(f"/dags/{dag_id}")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    errors = self.get("/importErrors").get("import_errors", [])
                    message = f"DAG {dag_id} not parsed after {timeout_s} s; import errors: {errors}"
                    raise RuntimeError(message) from None
                time.sleep(1)

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        body = {"logical_date": None, "conf": conf or {}, **({"dag_run_id": run_id} if run_id else {})}
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while (run := self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))["state"] not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s} s")
            time.sleep(1)
        return run

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        instances = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in instances}
