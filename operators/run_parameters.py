"""A run's parameters (``conf`` when triggering, the form in Airflow's UI): user input like the spec.

Anyone allowed to trigger a pipeline writes them, so they are checked with the spec's own rules before
any work starts: the first task of the run fails with a message naming the parameter and what is
allowed, and nothing is pinned, validated or submitted. The DAG's ``Param`` schemas say the same to the
trigger form and the REST API, which refuse most mistakes before a run exists. Imports no Airflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from operators.typed_yaml import LARGEST_INT, MAX_DEPTH, ConfigError, Problem, full_match, text_problem

VALIDATE_ON = ("auto", "worker", "cluster")  # auto: the contract's validation.cluster_above decides
MAX_PARAMETERS_BYTES = 64 << 10  # train_params as JSON: a run overrides a few hyper-parameters
REVISION = r"[A-Za-z0-9_.:/@+=,][A-Za-z0-9_.:/@+=,-]{0,511}"  # the spec's dataset.revision rule
PIPELINE_NAME = r"[a-z][a-z0-9_]{0,62}"
MAX_REASON = 2000


class RunParameterError(ConfigError):
    """A run parameter that breaks the spec's rules; names ``params.<name>`` and what is allowed."""


@dataclass(frozen=True)
class PipelineRun:
    """The checked parameters of one pipeline run."""

    revision: str
    train_params: dict[str, Any]
    validate_on: str


@dataclass(frozen=True)
class RollbackRun:
    pipeline: str
    reason: str
    to_version: str


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not plain JSON data a job may receive (NaN, control characters, deep nesting)."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= LARGEST_INT else f"{value} is too large"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        problem = text_problem(value)
        return f"the text {problem}" if problem else None
    if isinstance(value, list):
        return next((problem for item in value if (problem := json_problem(item, depth + 1))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {key!r} is not text"
            problem = text_problem(key) or json_problem(item, depth + 1)
            if problem:
                return f"{key}: {problem}"
        return None
    return f"{type(value).__name__} is not JSON data"


def _unknown(given: Mapping[str, Any], known: tuple[str, ...]) -> list[Problem]:
    return [Problem(None, None, f"params.{key}", f"unknown run parameter (allowed: {', '.join(known)})")
            for key in sorted(set(given) - set(known), key=str)]


def pipeline_run(spec: Any, params: Mapping[str, Any], conf: Mapping[str, Any] | None) -> PipelineRun:
    """The run's ``revision``, ``train_params`` and ``validate_on``, checked; every problem at once."""
    known = ("revision", "train_params", "validate_on")
    problems = _unknown(conf or {}, known)

    def fail(name: str, message: str) -> None:
        problems.append(Problem(None, None, f"params.{name}", message))

    revision = params.get("revision") or spec.dataset.revision
    if not isinstance(revision, str) or not full_match(REVISION, revision):
        fail("revision", f"{revision!r} is not a dataset revision (a git tag or commit: letters, digits and "
                         "_.:/@+=,- only, not starting with -)")
    overrides = params.get("train_params") or {}
    allowed = sorted(spec.training.params)
    if not isinstance(overrides, dict):
        fail("train_params", f"expected a mapping of training.params to new values, got {type(overrides).__name__}")
        overrides = {}
    for key in sorted(set(overrides) - set(spec.training.params), key=str):
        fail(f"train_params.{key}", f"not one of the spec's training.params (allowed: {', '.join(allowed) or 'none'})")
    problem = json_problem(overrides)
    if problem:
        fail("train_params", problem)
    elif len(json.dumps(overrides)) > MAX_PARAMETERS_BYTES:
        fail("train_params", f"more than {MAX_PARAMETERS_BYTES >> 10} KiB of JSON")
    validate_on = (conf or {}).get("validate_on") or params.get("validate_on") or "auto"
    if validate_on not in VALIDATE_ON:
        fail("validate_on", f"{validate_on!r} is not allowed (allowed: {', '.join(VALIDATE_ON)})")
    if problems:
        raise RunParameterError(problems)
    return PipelineRun(revision, {**spec.training.params, **overrides}, validate_on)


def rollback_run(params: Mapping[str, Any], conf: Mapping[str, Any] | None, known_pipelines: list[str]) -> RollbackRun:
    """``serving_rollback``'s ``pipeline``, ``reason`` and ``to_version``, checked."""
    problems = _unknown(conf or {}, ("pipeline", "reason", "to_version"))
    pipeline, reason, to_version = params.get("pipeline"), params.get("reason"), params.get("to_version") or ""
    if not isinstance(pipeline, str) or not full_match(PIPELINE_NAME, pipeline) or pipeline not in known_pipelines:
        problems.append(Problem(None, None, "params.pipeline", f"{pipeline!r} is not a pipeline (known: "
                                                               f"{', '.join(known_pipelines) or 'none'})"))
    if not isinstance(reason, str) or len(reason.strip()) < 3:
        problems.append(Problem(None, None, "params.reason", "say why the version is rolled back (at least 3 "
                                                             "characters; it is recorded on the version)"))
    elif len(reason) > MAX_REASON or text_problem(reason):
        problems.append(Problem(None, None, "params.reason", text_problem(reason) or f"at most {MAX_REASON} "
                                                                                     "characters"))
    if not isinstance(to_version, str) or not full_match(r"[0-9]{0,9}", to_version):
        problems.append(Problem(None, None, "params.to_version", f"{to_version!r} is not a model version number"))
    if problems:
        raise RunParameterError(problems)
    return RollbackRun(pipeline, reason.strip(), to_version)
