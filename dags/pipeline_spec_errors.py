"""The import error of the pipeline specs that do not load (the DAG file ``pipelines.py`` builds the others).

Airflow shows a file's import error in its UI and marks every DAG of that file stale, so the bad specs'
errors (file:line: field: message, every one) are reported by this file, which builds no pipeline: a broken
spec never unschedules the good ones. The report is a placeholder DAG that always fails Airflow's validation
(``PipelineSpecErrors``), so the error reads as the specs' problems, not as a traceback. With every spec
valid the file defines nothing and Airflow clears the error.
"""

from __future__ import annotations

import os
from pathlib import Path

from operators.pipeline.build import spec_errors_dag
from operators.spec import PIPELINES_DIR, load_all

_, failed = load_all(Path(os.environ.get("FACTORY_PIPELINES_DIR") or PIPELINES_DIR))
if failed:
    pipeline_specs_with_errors = spec_errors_dag(failed)
