"""Serving targets behind one interface, so a rollout reads the same whatever serves the model.

``v2``: Open Inference Protocol V2 with the model repository extension (MLServer here; Triton and KServe
speak the same calls). ``openai``: an OpenAI-compatible endpoint (LLMs; JSC's Blablador). The provider of
an OpenAI-compatible service deploys the weights itself, so that target checks and measures what it
serves but cannot load, unload or switch a default: those steps say so in the rollout log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from operators import user_regex
from operators.serving.checks import CheckFailed, check_v2_outputs, v2_parameters, v2_smoke_inputs
from operators.serving.http import Credentials, InferenceError
from operators.serving.openai import OpenAIClient
from operators.serving.repository import DEFAULT_ENTRY, ModelRepository
from operators.serving.v2 import V2Client
from operators.spec import Smoke


class ServingTarget(Protocol):
    kind: str

    def stage(self, model: str, version: str, model_dir: Path | None) -> str:
        """Make ``version`` available next to the serving one; returns what was done, for the log."""

    def ready(self, model: str, version: str) -> bool: ...

    def smoke(self, model: str, version: str, smoke: Smoke) -> dict[str, Any]:
        """Ask the version with the spec's inputs; raise CheckFailed or InferenceError, else the evidence."""

    def probe(self, model: str, version: str) -> Callable[[], object]:
        """One small request to ``version``, for the latency check."""

    def default_version(self, model: str) -> str | None: ...

    def make_default(self, model: str, version: str) -> str: ...

    def unload(self, model: str, version: str) -> str: ...

    def served_versions(self, model: str) -> set[str]: ...


class V2Target:
    kind = "v2"

    def __init__(self, client: V2Client, repository: ModelRepository) -> None:
        self.client, self.repository = client, repository

    def stage(self, model: str, version: str, model_dir: Path | None) -> str:
        if model_dir is not None:
            self.repository.install(model, version, model_dir)
        elif not (self.repository.version_folder(model, version)).exists():
            raise InferenceError(f"{model} version {version} is not in the model repository any more")
        self.client.load(model)  # loads the new folder; the versions already loaded are loaded anew first
        return f"loaded {model} version {version} from {self.repository.version_folder(model, version)}"

    def ready(self, model: str, version: str) -> bool:
        return self.client.model_ready(model, version)

    def _example(self, model: str, version: str) -> dict[str, Any]:
        example = self.repository.model_file(model, version, "serving_input_example.json")
        if not example.exists():
            raise CheckFailed(f"{model} version {version} has no serving input example to smoke-test with "
                              "(log the model with input_example=...)")
        return json.loads(example.read_text())

    def smoke(self, model: str, version: str, smoke: Smoke) -> dict[str, Any]:
        example = self._example(model, version)
        inputs = v2_smoke_inputs(example, smoke.inputs)
        answer = self.client.infer(model, inputs, version=version, parameters=v2_parameters(example))
        if answer.get("model_version") not in (None, version):
            raise CheckFailed(f"asked version {version}, version {answer.get('model_version')} answered")
        outputs = check_v2_outputs(answer, inputs[0]["shape"][0], smoke.allowed_outputs, smoke.output_range)
        return {"rows": inputs[0]["shape"][0], "outputs": outputs[:20]}

    def probe(self, model: str, version: str) -> Callable[[], object]:
        example = self._example(model, version)
        inputs, parameters = v2_smoke_inputs(example), v2_parameters(example)
        return lambda: self.client.infer(model, inputs, version=version, parameters=parameters)

    def default_version(self, model: str) -> str | None:
        return self.repository.default_version(model)

    def make_default(self, model: str, version: str) -> str:
        previous = self.repository.default_version(model)
        self.repository.set_default(model, version)
        try:
            self.client.load(model)
            if not self.client.model_ready(model, DEFAULT_ENTRY):
                raise InferenceError(f"the default entry of {model} is not ready after the switch")
            self._check_default_answers_as(model, version)
        except (InferenceError, CheckFailed):
            if previous is not None:
                self.repository.set_default(model, previous)
                self.client.load(model)
            raise
        return (f"unversioned requests for {model} now go to version {version} (their answers say "
                f"model_version {version}, header X-Model-Version)")

    def _check_default_answers_as(self, model: str, version: str) -> None:
        """An unversioned request is answered, and names ``version`` as the one that answered it."""
        example = self._example(model, version)
        answer = self.client.infer(model, v2_smoke_inputs(example), parameters=v2_parameters(example))
        if answer.get("model_version") != version:
            raise InferenceError(f"after the switch, an unversioned request to {model} was answered as version "
                                 f"{answer.get('model_version')!r}, not {version}")

    def unload(self, model: str, version: str) -> str:
        if version == self.repository.default_version(model):
            raise InferenceError(f"{model} version {version} is the default; make another version the default first")
        self.repository.remove(model, version)
        if self.repository.installed_versions(model):
            self.client.load(model)  # MLServer drops the versions whose folder is gone
        else:
            self.client.unload(model)
        return f"unloaded {model} version {version}"

    def served_versions(self, model: str) -> set[str]:
        return {version for version in self.repository.installed_versions(model)
                if self.client.model_ready(model, version)}


class OpenAITarget:
    kind = "openai"

    def __init__(self, client: OpenAIClient, model_id: str = "{model}") -> None:
        self.client, self.model_id = client, model_id

    def _id(self, model: str, version: str) -> str:
        return self.model_id.format(model=model, version=version)

    def stage(self, model: str, version: str, model_dir: Path | None) -> str:
        return (f"the provider deploys {self._id(model, version)}; an OpenAI-compatible API has no call "
                "to load a model")

    def ready(self, model: str, version: str) -> bool:
        return self._id(model, version) in self.client.model_ids()

    def smoke(self, model: str, version: str, smoke: Smoke) -> dict[str, Any]:
        if not smoke.prompt:
            raise CheckFailed("serving.smoke.prompt is required for an openai target")
        answer = self.client.chat(self._id(model, version), smoke.prompt)
        if not answer.content.strip():
            raise CheckFailed(f"{self._id(model, version)} answered an empty message")
        if smoke.expect_pattern and not user_regex.search(smoke.expect_pattern, answer.content):
            raise CheckFailed(f"the reply {answer.content[:200]!r} does not match serving.smoke.expect_pattern "
                              f"{smoke.expect_pattern!r}")
        return {"reply": answer.content[:500], "finish_reason": answer.finish_reason}

    def probe(self, model: str, version: str) -> Callable[[], object]:
        return lambda: self.client.chat(self._id(model, version), "ping", max_tokens=1)

    def default_version(self, model: str) -> str | None:
        return None

    def make_default(self, model: str, version: str) -> str:
        return "an OpenAI-compatible API routes by model id: clients choose the id; only the alias moves"

    def unload(self, model: str, version: str) -> str:
        return f"the provider unloads {self._id(model, version)}; an OpenAI-compatible API has no call for it"

    def served_versions(self, model: str) -> set[str]:
        return set()


def target_from_connection(kind: str, host: str, port: int | None, schema: str | None, login: str | None,
                           password: str | None, extra: dict[str, Any]) -> ServingTarget:
    """A target from an Airflow connection's fields: the URL from host/port/schema (or ``extra.url``),
    a bearer token from the password (or HTTP basic with ``extra.auth: basic``)."""
    url = extra.get("url") or f"{schema or 'http'}://{host}" + (f":{port}" if port else "")
    credentials = Credentials(login=login, password=password) if extra.get("auth") == "basic" \
        else Credentials(token=password or None)
    timeout = float(extra.get("timeout_s", 60))
    if kind == "v2":
        if "model_repository" not in extra:
            raise ValueError("the inference connection's extra needs model_repository: the folder the V2 "
                             "server loads models from")
        return V2Target(V2Client(url, credentials, timeout), ModelRepository(Path(extra["model_repository"])))
    if kind == "openai":
        return OpenAITarget(OpenAIClient(url, credentials, timeout), extra.get("model_id", "{model}"))
    raise ValueError(f"unknown serving target {kind!r} (allowed: v2, openai)")
