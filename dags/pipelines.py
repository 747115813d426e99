"""One Airflow DAG per pipeline spec in ``pipelines/*/pipeline.yaml``.

Building a DAG reads YAML only: no mlflow, great_expectations or dvc import at parse time.
"""

from __future__ import annotations

from pathlib import Path

from operators.pipeline.build import build_dag
from operators.spec import discover, load_spec

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"

for spec_file in discover(PIPELINES):
    spec = load_spec(spec_file)
    globals()[spec.dag_id] = build_dag(spec)
