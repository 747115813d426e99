"""One Airflow DAG per pipeline spec in ``pipelines/*/pipeline.yaml`` (``$FACTORY_PIPELINES_DIR`` if set).

Building a DAG reads YAML only: no mlflow, great_expectations or dvc import at parse time. A bad
spec makes this file an import error that lists every mistake (file, line, field, allowed values),
and no pipeline DAG from this file is scheduled until it is fixed: ``./factory lint`` catches the same
errors before a change is merged.
"""

from __future__ import annotations

import os
from pathlib import Path

from operators.pipeline.build import build_dag
from operators.spec import PIPELINES_DIR, SpecError, load_all

specs, errors = load_all(Path(os.environ.get("FACTORY_PIPELINES_DIR") or PIPELINES_DIR))
if errors:
    raise SpecError(f"{len(errors)} error(s) in pipeline specs:\n" + "\n".join(errors), errors)
for spec in specs:
    globals()[spec.dag_id] = build_dag(spec)
