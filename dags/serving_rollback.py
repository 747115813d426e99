"""``serving_rollback``: put the version that served before back in front of a pipeline's model.

Trigger it with ``pipeline`` (the spec's name), ``reason`` (recorded on the rolled-back version) and,
optionally, ``to_version`` (default: the version the current champion replaced, from its
``serving.previous_version`` tag). The target version is loaded again if it was retired, smoke-tested,
made the default; then the champion alias moves back and the replaced version is tagged and unloaded.
Unversioned requests keep being answered throughout. ``./factory rollback PIPELINE --reason ...`` triggers it.

Parsing reads no spec and imports no mlflow: the task does.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from operators.serving.tasks import roll_back

DAG_ID = "serving_rollback"

with DAG(
    dag_id=DAG_ID,
    description="Roll a pipeline's served model back to the version before (or a chosen one)",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["serving"],
    default_args={"owner": "aifactory", "retries": 0, "execution_timeout": timedelta(minutes=10)},
    params={
        "pipeline": Param(type="string", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                          description="the pipeline (folder under pipelines/) whose model to roll back"),
        "reason": Param(type="string", minLength=3, description="why; recorded on the rolled-back version"),
        "to_version": Param("", type="string", pattern=r"^[0-9]*$",
                            description="the model version to serve again; empty: the one served before"),
    },
    doc_md=__doc__,
) as dag:
    PythonOperator(task_id="roll_back", python_callable=roll_back)
