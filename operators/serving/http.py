"""JSON over HTTP for the inference clients: credentials in headers only, never in a message or a URL."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from operators.errors import ServingError
from operators.http_json import JsonClient


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


class HttpJson(JsonClient):
    """An inference endpoint's JSON API with the connection's credentials."""

    def __init__(self, base_url: str, credentials: Credentials | None = None, timeout_s: float = 60.0) -> None:
        self.credentials = credentials or Credentials()
        super().__init__(base_url, InferenceError, self.credentials.headers(), timeout_s, self.credentials.secrets(),
                         refused_hint=" (the connection's credentials were refused)")
