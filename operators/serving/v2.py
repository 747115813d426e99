"""A minimal Open Inference Protocol V2 client with the model repository extension."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class InferenceError(RuntimeError):
    """The inference server refused a request; the message names the call and the answer."""


class V2Client:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method, headers=self._headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise InferenceError(f"{method} {path}: HTTP {error.code}: {error.read()[:500].decode()}") from None
        except urllib.error.URLError as error:
            raise InferenceError(f"{method} {path}: {error.reason}") from None
        return json.loads(raw) if raw else None

    def server_ready(self) -> bool:
        try:
            self._call("GET", "/v2/health/ready")
        except InferenceError:
            return False
        return True

    def repository_index(self) -> list[dict[str, Any]]:
        return self._call("POST", "/v2/repository/index", {})

    def load(self, model: str) -> None:
        self._call("POST", f"/v2/repository/models/{model}/load")

    def unload(self, model: str) -> None:
        self._call("POST", f"/v2/repository/models/{model}/unload")

    def infer(self, model: str, inputs: list[dict[str, Any]], version: str | None = None,
              parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return self._call("POST", path, {"inputs": inputs, **({"parameters": parameters} if parameters else {})})
