"""``./factory demo``: run the main job on the local stack and say where to look.

Until the end-to-end example pipeline lands, the main job is the ``stack_smoke`` DAG: one real
call to each service (S3, Slurm through slurmrestd as the project user, MLflow, inference).
"""

from __future__ import annotations

import json
import sys
import time

from stack.airflow_api import AirflowAPI
from stack.settings import StackPaths

MAIN_DAG = "stack_smoke"


def main() -> int:
    paths = StackPaths.from_env()
    info = json.loads(paths.info_file.read_text())
    airflow = AirflowAPI(info["airflow"]["url"], info["airflow"]["username"], info["airflow"]["password"])
    began = time.monotonic()
    airflow.wait_for_dag(MAIN_DAG)
    run_id = airflow.trigger(MAIN_DAG)
    print(f"triggered {MAIN_DAG} run {run_id}; waiting ...")
    run = airflow.wait_for_run(MAIN_DAG, run_id)
    states = airflow.task_states(MAIN_DAG, run_id)
    for task_id, state in states.items():
        print(f"  {task_id:<20} {state}")
    print(f"{MAIN_DAG} {run['state']} in {time.monotonic() - began:.1f} s\n")
    print(f"""Where to look:
  Airflow UI        {info['airflow']['url']}  (user admin, password in {paths.info_file})
  MLflow UI         {info['mlflow']['url']}  (user {info['mlflow']['username']}, same file)
  S3 (reports)      {info['s3']['endpoint_url']}/reports  (keys in the same file)
  Inference (V2)    {info['mlserver']['url']}/v2/health/ready
  Slurm             sinfo / squeue / sacct on this machine; REST at {info['slurmrestd']['url']}
  Logs              {paths.logs}
Stop everything:    ./factory stack down""")
    return 0 if run["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
