"""JSON over HTTP for the inference clients: credentials in headers only, never in a message or a URL."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from operators.errors import ServingError


class InferenceError(ServingError):
    """The inference server refused a request; the message names the call and the answer."""


@dataclass(frozen=True)
class Credentials:
    """How to authenticate: a bearer token (the connection's password) or HTTP basic (login and password)."""

    token: str | None = field(default=None, repr=False)
    login: str | None = None
    password: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.login and self.password:
            pair = base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {}

    def secrets(self) -> list[str]:
        return [value for value in (self.token, self.password) if value]


class HttpJson:
    def __init__(self, base_url: str, credentials: Credentials | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials or Credentials()
        self._headers = {"Content-Type": "application/json", **self.credentials.headers()}
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method, headers=self._headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = self._without_secrets(error.read()[:500].decode(errors="replace"))
            hint = " (the connection's credentials were refused)" if error.code in (401, 403) else ""
            raise InferenceError(f"{method} {path}: HTTP {error.code}{hint}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise InferenceError(f"{method} {self.base_url}{path}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise InferenceError(f"{method} {path}: the answer is not JSON: {raw[:200]!r}") from None

    def answers(self, method: str, path: str) -> bool:
        """Whether the call succeeds: health and readiness endpoints answer 200 or an error status."""
        try:
            self.call(method, path)
        except InferenceError:
            return False
        return True

    def _without_secrets(self, text: str) -> str:
        for secret in self.credentials.secrets():
            text = text.replace(secret, "***")
        return text
