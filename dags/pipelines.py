"""One Airflow DAG per pipeline spec in ``pipelines/*/pipeline.yaml`` (``$FACTORY_PIPELINES_DIR`` if set).

Building a DAG reads YAML only: no mlflow, great_expectations or dvc import at parse time. A bad spec
breaks only itself: this file builds every good spec's DAG, and ``pipeline_spec_errors.py`` reports the bad
ones as its own import error (Airflow marks every DAG of a file with an import error stale, so the errors
must come from another file). ``./factory lint`` catches the same errors before a change is merged.
"""

from __future__ import annotations

import os
from pathlib import Path

from operators.pipeline.build import build_dag
from operators.spec import PIPELINES_DIR, load_all

specs, _ = load_all(Path(os.environ.get("FACTORY_PIPELINES_DIR") or PIPELINES_DIR))
for spec in specs:
    globals()[spec.dag_id] = build_dag(spec)
