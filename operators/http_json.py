"""JSON over HTTP for the orchestrator's clients (inference servers, slurmrestd, Airflow's API, health checks).

One place for what each of them needs: a timeout on every call, errors that name the call and the answer
(raised as the caller's own error class), credentials in headers only and never in a message. ``httpx`` (the
orchestrator's; code inside jobs keeps the standard library).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import httpx


class JsonClient:
    """A JSON API at ``base_url``: ``call`` returns the decoded answer or raises ``error`` with a message
    that names the method, the path, the status and (without any secret) the server's words."""

    def __init__(self, base_url: str, error: type[Exception], headers: dict[str, str] | None = None,
                 timeout_s: float = 60.0, secrets: Iterable[str] = (), refused_hint: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.error, self.refused_hint = error, refused_hint
        self.secrets = [secret for secret in secrets if secret]
        # one connection per call, as urllib made them: a pooled connection the server has just closed
        # (keep-alive timeout, a worker restart after a 500) fails the next call with "connection reset",
        # and a POST is never sent twice to find out
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                 limits=httpx.Limits(max_keepalive_connections=0),
                                 headers={"Content-Type": "application/json", **(headers or {})})

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        response = self.send(method, path, body, headers)
        if response.status_code >= 400:
            raise self.status_error(method, path, response)
        return self.decode(method, path, response)

    def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """The raw answer (any status); an unreachable server raises ``error`` naming the URL."""
        try:
            return self.http.request(method, path, content=json.dumps(body) if body is not None else None,
                                     headers=headers)
        except httpx.HTTPError as problem:
            raise self.error(f"{method} {self.base_url}{path}: {self.redact(str(problem)) or type(problem).__name__}") \
                from None

    def status_error(self, method: str, path: str, response: httpx.Response) -> Exception:
        hint = self.refused_hint if response.status_code in (401, 403) else ""
        detail = self.redact(response.text[:500])
        return self.error(f"{method} {path}: HTTP {response.status_code}{hint}: {detail}")

    def decode(self, method: str, path: str, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise self.error(f"{method} {path}: the answer is not JSON: {response.content[:200]!r}") from None

    def answers(self, method: str, path: str) -> bool:
        """Whether the call succeeds (health and readiness endpoints): no exception either way."""
        try:
            self.call(method, path)
        except self.error:
            return False
        return True

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self.http.close()
