"""``./factory demo``: run the main job on the local stack and say where to look.

The main job is the example pipeline ``pipelines/breast_cancer``: pin the dataset version,
validate it against its contract, train and evaluate on Slurm, register in MLflow, push to
the inference server, then ask the served model for a prediction.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from stack.airflow_api import AirflowAPI
from stack.settings import StackPaths

MAIN_DAG = "pipeline_breast_cancer"


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
    if run["state"] == "success":
        show_served_model(airflow, run_id, info)
    print(f"""Where to look:
  Airflow UI        {info['airflow']['url']}/dags/{MAIN_DAG}  (user admin, password in {paths.info_file})
  MLflow UI         {info['mlflow']['url']}/#/models  (user {info['mlflow']['username']}, same file)
  Reports           {info['airflow']['url']}/factory/reports/validation/  (validation task: "Validation report")
  Inference (V2)    {info['mlserver']['url']}/v2/repository/index  (POST)
  Slurm             sacct -X -o JobID,JobName,User,State,Elapsed,MaxRSS; REST at {info['slurmrestd']['url']}
  Logs              {paths.logs}
Stop everything:    ./factory stack down""")
    return 0 if run["state"] == "success" else 1


def show_served_model(airflow: AirflowAPI, run_id: str, info: dict) -> None:
    """Ask the inference server for a prediction from the version this run pushed."""
    from operators.serving.push import smoke_request
    from operators.serving.v2 import V2Client

    registered = airflow.get(f"/dags/{MAIN_DAG}/dagRuns/{run_id}/taskInstances/register/xcomEntries/return_value")
    version = registered["value"]
    print(f"registered {version['model']} version {version['version']} "
          f"({'promoted to champion' if version['promoted'] else 'not promoted'})")
    folder = Path(info["model_repository"]) / version["model"] / str(version["version"])
    example = folder / "model" / "serving_input_example.json"
    if version["promoted"] and example.exists():
        answer = V2Client(info["mlserver"]["url"]).infer(
            version["model"], smoke_request(json.loads(example.read_text())), version=str(version["version"]),
            parameters={"content_type": "pd"})
        print(f"served by {info['mlserver']['url']}: predictions {answer['outputs'][0]['data']} for the "
              "model's input example\n")


if __name__ == "__main__":
    sys.exit(main())
