"""What a rollout, a failed rollout, a retirement and a rollback leave on the MLflow model version.

Tags under ``serving.``, so a project lead sees in the registry which version serves, since when, how
fast it answered its checks, and why a version was rolled back. Imports no Airflow.
"""

from __future__ import annotations

import json
import time
from typing import Any

REASON_LIMIT = 4000  # MLflow tag values are limited; the task log keeps the whole message


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _tag(client: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:REASON_LIMIT])


def rolled_out(client: Any, name: str, report: dict[str, Any], target: str, run: str) -> None:
    _tag(client, name, report["version"], {
        "serving.status": "serving", "serving.target": target, "serving.since": now(), "serving.by": run,
        "serving.previous_version": report["previous_version"] or "", "serving.rollout_s": report["total_s"],
        "serving.smoke": json.dumps(report["smoke"]), "serving.latency": json.dumps(report["latency"]),
        # how a client sees which version answered it (checked by the rollout's "default" step)
        "serving.answers_as": (f"{report['model']}: model_version {report['version']} and header X-Model-Version "
                               "in every answer" if target == "v2" else f"{report['model']}")})


def rollout_failed(client: Any, name: str, version: str, step: str, reason: str, run: str) -> None:
    _tag(client, name, version, {"serving.status": "rollout_failed", "serving.failed_step": step,
                                 "serving.reason": reason, "serving.failed_at": now(), "serving.by": run})


def retired(client: Any, name: str, version: str, run: str) -> None:
    _tag(client, name, version, {"serving.status": "retired", "serving.retired_at": now(), "serving.by": run})


def rolled_back(client: Any, name: str, bad_version: str, to_version: str, reason: str, run: str) -> None:
    _tag(client, name, bad_version, {"serving.status": "rolled_back", "serving.reason": reason,
                                     "serving.rolled_back_at": now(), "serving.rolled_back_to": to_version,
                                     "serving.by": run})
    _tag(client, name, to_version, {"serving.status": "serving", "serving.since": now(), "serving.by": run})
