"""One Airflow DAG per pipeline spec in ``pipelines/*/pipeline.yaml`` (``$FACTORY_PIPELINES_DIR`` if set).

Building a DAG reads YAML only: no mlflow, great_expectations or dvc import at parse time. A bad spec
breaks only itself: its errors (file, line, field, allowed values) are this file's import error in
Airflow, and every good spec's DAG is built and keeps its schedule and runs. ``./factory lint`` catches
the same errors before a change is merged.
"""

from __future__ import annotations

import os
from pathlib import Path

from operators.pipeline.build import build_dag, spec_errors_dag
from operators.spec import PIPELINES_DIR, load_all

specs, failed = load_all(Path(os.environ.get("FACTORY_PIPELINES_DIR") or PIPELINES_DIR))
for spec in specs:
    globals()[spec.dag_id] = build_dag(spec)
if failed:
    pipeline_specs_with_errors = spec_errors_dag(failed)
