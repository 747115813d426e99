"""``./factory demo [--pipeline NAME] [--json]``: run a pipeline on the local stack and say where to look.

The main job is the example pipeline ``pipelines/breast_cancer``: pin the dataset version,
validate it against its contract, train and evaluate on Slurm, register in MLflow, push to
the inference server, then ask the served model for a prediction.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stack.airflow_api import FINISHED, AirflowAPI
from stack.settings import StackPaths

MAIN_PIPELINE = "breast_cancer"


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the run succeeded, 1 when it failed (its task states say where), 2 for bad arguments."""
    parser = argparse.ArgumentParser(prog="factory demo", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=MAIN_PIPELINE, help=f"a pipeline in pipelines/ (default {MAIN_PIPELINE})")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    say = (lambda _text: None) if args.json else print
    dag_id = f"pipeline_{args.pipeline}"
    from operators.spec import unknown_pipeline

    if problem := unknown_pipeline(args.pipeline):
        print(f"factory demo: {problem}", file=sys.stderr)
        return 2
    paths = StackPaths.from_env()
    info = json.loads(paths.info_file.read_text())
    airflow = AirflowAPI.of_stack(info)
    began = time.monotonic()
    try:
        airflow.wait_for_dag(dag_id)
    except Exception as error:  # the API's own words: not parsed (yet), or an import error
        print(f"factory demo: no DAG {dag_id} ({error}); see ./factory lint", file=sys.stderr)
        return 2
    run_id = airflow.trigger(dag_id)
    say(f"triggered {dag_id} run {run_id}; each task's state as it changes:")
    run = follow_run(airflow, dag_id, run_id, began, say)
    instances = airflow.task_instances(dag_id, run_id)
    states = {ti["task_id"]: ti["state"] for ti in instances}
    seconds = round(time.monotonic() - began, 1)
    for line in duration_table(instances):
        say(line)
    say(f"{dag_id} {run['state']} in {seconds:.1f} s\n")
    served = show_served_model(airflow, dag_id, run_id, info, say) if run["state"] == "success" else None
    links = {"airflow": f"{info['airflow']['url']}/dags/{dag_id}", "mlflow": f"{info['mlflow']['url']}/#/models",
             "stewards": f"{info['airflow']['url']}/factory/stewards",
             "inference": f"{info['mlserver']['url']}/v2/repository/index", "slurmrestd": info["slurmrestd"]["url"],
             "logs": str(paths.logs)}
    if args.json:
        print(json.dumps({"dag_id": dag_id, "run_id": run_id, "state": run["state"], "seconds": seconds,
                          "tasks": states, "task_seconds": {ti["task_id"]: ti.get("duration") for ti in instances},
                          "served": served, "links": links}, indent=2))
    else:
        print(f"""Where to look:
  Airflow UI        {links['airflow']}  (user admin, password in {paths.info_file})
  MLflow UI         {links['mlflow']}  (user {info['mlflow']['username']}, same file)
  Data stewards     {links['stewards']}  (validation runs, reports, approve/reject)
  Inference (V2)    {links['inference']}  (POST)
  Slurm             sacct -X -o JobID,JobName,User,State,Elapsed,MaxRSS; REST at {links['slurmrestd']}
  Logs              {links['logs']}
Stop everything:    ./factory stack down""")
    return 0 if run["state"] == "success" else 1


def follow_run(airflow: AirflowAPI, dag_id: str, run_id: str, began: float, say, poll_s: float = 2.0,
               timeout_s: float = 900) -> dict:
    """Wait for the run, saying each task's new state as it happens (plain lines: a terminal and a CI
    log read the same)."""
    seen: dict[str, str | None] = {}
    while True:
        run = airflow.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        for line in state_changes(seen, airflow.task_states(dag_id, run_id), time.monotonic() - began):
            say(line)
        if run["state"] in FINISHED:
            return run
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def state_changes(seen: dict[str, str | None], states: dict[str, str | None], elapsed_s: float) -> list[str]:
    """Lines for the tasks whose state changed since ``seen`` (which is updated)."""
    lines = []
    for task_id, state in states.items():
        if state is not None and seen.get(task_id) != state:
            lines.append(f"  [{elapsed_s:6.1f} s] {task_id:<26} {state}")
            seen[task_id] = state
    return lines


def duration_table(instances: list[dict]) -> list[str]:
    """Each task's state and how long it ran (Airflow's duration; a deferred task's includes its wait)."""
    lines = [f"  {'task':<26} {'state':<16} seconds"]
    for ti in sorted(instances, key=lambda ti: (ti.get("start_date") or "~", ti["task_id"])):
        duration = ti.get("duration")
        lines.append(f"  {ti['task_id']:<26} {ti['state'] or 'none':<16} "
                     f"{'-' if duration is None else f'{duration:7.1f}'}")
    return lines


def show_served_model(airflow: AirflowAPI, dag_id: str, run_id: str, info: dict, say) -> dict:
    """Ask the inference server for a prediction, as a client does (no version): the rollout made this
    run's version the default."""
    from operators.serving.checks import v2_smoke_inputs
    from operators.serving.v2 import V2Client

    registered = airflow.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/register/xcomEntries/return_value")
    version = registered["value"]
    say(f"registered {version['model']} version {version['version']} "
        f"({'promoted to champion' if version['promoted'] else 'not promoted'})")
    folder = Path(info["model_repository"]) / version["model"] / str(version["version"])
    example = folder / "model" / "serving_input_example.json"
    served = {"model": version["model"], "version": str(version["version"]), "promoted": version["promoted"],
              "predictions": None}
    if version["promoted"] and example.exists():
        answer = V2Client(info["mlserver"]["url"]).infer(  # unversioned: what clients call
            version["model"], v2_smoke_inputs(json.loads(example.read_text())), parameters={"content_type": "pd"})
        served["predictions"] = answer["outputs"][0]["data"]
        say(f"served by {info['mlserver']['url']}: predictions {served['predictions']} for the "
            "model's input example\n")
    return served


if __name__ == "__main__":
    sys.exit(main())
