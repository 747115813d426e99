"""``./factory rollback PIPELINE --reason TEXT [--to VERSION]``: trigger ``serving_rollback`` and wait.

Exit 0 when the previous (or chosen) version serves again and is the champion, 1 when the rollback
failed (the task log says why; nothing changed unless it says so), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from stack.airflow_api import AirflowAPI
from stack.settings import StackPaths

DAG_ID = "serving_rollback"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="factory rollback", description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="a pipeline in pipelines/")
    parser.add_argument("--reason", required=True, help="why; recorded on the rolled-back model version")
    parser.add_argument("--to", dest="to_version", default="", help="the version to serve (default: the one before)")
    args = parser.parse_args(argv)
    from operators.spec import unknown_pipeline

    if problem := unknown_pipeline(args.pipeline):
        print(f"factory rollback: {problem}", file=sys.stderr)
        return 2
    if args.to_version and not args.to_version.isdigit():
        print(f"factory rollback: --to {args.to_version!r} is not a model version number", file=sys.stderr)
        return 2
    info = json.loads(StackPaths.from_env().info_file.read_text())
    airflow = AirflowAPI.of_stack(info)
    airflow.wait_for_dag(DAG_ID)
    run_id = airflow.trigger(DAG_ID, {"pipeline": args.pipeline, "reason": args.reason,
                                      "to_version": args.to_version})
    print(f"triggered {DAG_ID} run {run_id}; waiting ...")
    run = airflow.wait_for_run(DAG_ID, run_id)
    if run["state"] != "success":
        print(f"{DAG_ID} {run['state']}: see the log of task roll_back in run {run_id}", file=sys.stderr)
        return 1
    result = airflow.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/roll_back/xcomEntries/return_value")
    print(json.dumps(result["value"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
