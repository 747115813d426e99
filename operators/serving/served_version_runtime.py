"""MLServer runtime of a model's default entry: every answer names the registered version that computed it.

Unversioned requests (``/v2/models/<model>/infer``) go to the repository's ``default`` entry, so MLServer
answers ``model_version: "default"`` and a client cannot tell which registered version served it. This
runtime answers with that version in ``model_version`` and in the ``X-Model-Version`` header. The
repository copies this file beside the default entry's ``model-settings.json`` (MLServer imports a
runtime from that folder), so any MLServer with ``mlserver-mlflow`` serves it: only MLServer is imported.
"""

from __future__ import annotations

from mlserver.types import InferenceRequest, InferenceResponse, Parameters
from mlserver_mlflow import MLflowRuntime

VERSION_HEADER = "X-Model-Version"


class ServedVersionRuntime(MLflowRuntime):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        response = await super().predict(payload)
        parameters = self.settings.parameters
        extra = (parameters.extra if parameters else None) or {}
        served = str(extra.get("serves_version") or response.model_version)
        response.model_version = served
        answer_parameters = response.parameters or Parameters()
        answer_parameters.headers = {**(answer_parameters.headers or {}), VERSION_HEADER: served}
        response.parameters = answer_parameters
        return response
