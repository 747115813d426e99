"""The demo's and tests' Airflow API client repeats a request the database refused, when that is safe."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import stack.airflow_api as airflow_api
from stack.airflow_api import AirflowAPI, AirflowDatabaseError

DATABASE_ERROR = json.dumps({"detail": {"reason": "Database error", "message": "Serious error"}}).encode()


class FlakyServer:
    """A real HTTP server that refuses the first ``failures`` API requests with Airflow's database error."""

    def __init__(self, failures: int, body: bytes = DATABASE_ERROR) -> None:
        self.failures, self.body, self.requests = failures, body, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/auth/token":
                    self._send(201, {"access_token": "t"})
                    return
                outer.requests.append(self.command)
                if len(outer.requests) <= outer.failures:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(outer.body)
                    return
                self._send(200, {"dag_id": "d", "is_paused": False})

            def _send(self, status: int, body: dict) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            do_GET = do_PATCH = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_api, "DATABASE_ERROR_RETRY_DELAYS_S", (0.0, 0.0, 0.0))


@pytest.fixture
def serve() -> Iterator:
    servers: list[FlakyServer] = []

    def start(failures: int, body: bytes = DATABASE_ERROR) -> FlakyServer:
        servers.append(FlakyServer(failures, body))
        return servers[-1]
    yield start
    for server in servers:
        server.server.shutdown()


def test_a_patch_the_database_refused_is_asked_again(serve) -> None:
    server = serve(failures=2)
    answer = AirflowAPI(server.url, "u", "p").patch("/dags/d", {"is_paused": False})
    assert answer["is_paused"] is False
    assert server.requests == ["PATCH", "PATCH", "PATCH"]


def test_a_post_is_never_repeated(serve) -> None:
    server = serve(failures=1)
    with pytest.raises(AirflowDatabaseError, match="HTTP 500"):
        AirflowAPI(server.url, "u", "p").post("/dags/d/dagRuns", {"conf": {}})
    assert server.requests == ["POST"]


def test_the_error_surfaces_once_the_retries_are_spent(serve) -> None:
    server = serve(failures=10)
    with pytest.raises(AirflowDatabaseError, match="Database error"):
        AirflowAPI(server.url, "u", "p").get("/dags/d")
    assert server.requests == ["GET"] * 4


def test_other_server_errors_are_not_repeated(serve) -> None:
    server = serve(failures=1, body=b'{"detail": "boom"}')
    with pytest.raises(RuntimeError, match="boom") as raised:
        AirflowAPI(server.url, "u", "p").get("/dags/d")
    assert not isinstance(raised.value, AirflowDatabaseError)
    assert server.requests == ["GET"]
