"""A small Open Inference Protocol V2 client with the model repository extension (MLServer, Triton, KServe)."""

from __future__ import annotations

from typing import Any

from operators.serving.http import HttpJson, InferenceError

__all__ = ["InferenceError", "V2Client"]


class V2Client(HttpJson):
    def server_ready(self) -> bool:
        return self.answers("GET", "/v2/health/ready")

    def model_ready(self, model: str, version: str | None = None) -> bool:
        return self.answers("GET", f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready")

    def repository_index(self) -> list[dict[str, Any]]:
        return self.call("POST", "/v2/repository/index", {})

    def ready_versions(self, model: str) -> set[str]:
        """The entries of ``model`` the repository index calls READY (MLServer reports the state of the
        model's default for each of its entries; ask ``model_ready`` for one version)."""
        return {entry.get("version") or "" for entry in self.repository_index()
                if entry["name"] == model and entry["state"] == "READY"}

    def load(self, model: str) -> None:
        self.call("POST", f"/v2/repository/models/{model}/load")

    def unload(self, model: str) -> None:
        self.call("POST", f"/v2/repository/models/{model}/unload")

    def infer(self, model: str, inputs: list[dict[str, Any]], version: str | None = None,
              parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return self.call("POST", path, {"inputs": inputs, **({"parameters": parameters} if parameters else {})})
