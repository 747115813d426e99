"""SlurmJobOperator through real Airflow: adoption instead of duplicate submission, failure details."""

from __future__ import annotations

import json
import subprocess
import uuid

from operators.slurm.rest import SlurmRestClient
from stack.airflow_api import AirflowAPI

DAG = "slurm_job_example"


def jobs_with_comment(comment: str) -> list[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--starttime", "now-1days", "-o", "JobID,Comment"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.split("|", 1)[1] == comment]


def test_a_job_left_by_an_earlier_try_is_adopted_not_submitted_again(airflow, stack_info):
    rest = stack_info["slurmrestd"]
    run_id = f"adopt-{uuid.uuid4().hex[:10]}"
    identity = f"airflow:{DAG}/{run_id}/run_job/-1"
    earlier = SlurmRestClient(rest["url"], rest["user"], rest["token"]).submit(
        "#!/bin/bash\necho submitted by an earlier try; sleep 6\n", name="earlier-try", comment=identity,
        account=stack_info["account"], current_working_directory=stack_info["jobs_dir"],
        standard_output=f"{stack_info['jobs_dir']}/slurm-%j.out", memory_per_node=64)
    airflow.trigger(DAG, {"seconds": 1, "exit_code": 0}, run_id=run_id)
    run = airflow.wait_for_run(DAG, run_id, timeout_s=180)
    assert run["state"] == "success"
    result = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/run_job/xcomEntries/return_value")["value"]
    assert result["job_id"] == earlier
    assert jobs_with_comment(identity) == [str(earlier)], "exactly one job for the task"


def test_exit_code_and_log_tail_reach_the_task(airflow):
    run_id = f"exit3-{uuid.uuid4().hex[:10]}"
    airflow.trigger(DAG, {"seconds": 0, "exit_code": 3}, run_id=run_id)
    run = airflow.wait_for_run(DAG, run_id, timeout_s=180)
    assert run["state"] == "failed"
    log = json.dumps(airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/run_job/logs/1?full_content=true"))
    assert "ended FAILED with exit code 3" in log
    assert "job " in log and "as hpcuser" in log, "the tail of the job's own log is in the failure"


def test_marking_a_deferred_task_failed_cancels_its_job(airflow, stack_info):
    import time

    run_id = f"cancel-{uuid.uuid4().hex[:10]}"
    airflow.trigger(DAG, {"seconds": 300, "exit_code": 0}, run_id=run_id)
    task = f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/run_job"
    deadline = time.monotonic() + 120
    while (airflow.get(task) if airflow_has(airflow, task) else {}).get("state") != "deferred":
        assert time.monotonic() < deadline, "the task never deferred"
        time.sleep(1)
    # on_kill reaches triggers the triggerer is running; one marked failed before the triggerer
    # picked it up is not cancelled yet (a known gap, see the README)
    while "starting" not in json.dumps(airflow.get(f"{task}/logs/1?full_content=true")).split("trigger ", 1)[-1]:
        assert time.monotonic() < deadline, "the trigger never started"
        time.sleep(1)
    job_id = airflow.get(f"{task}/xcomEntries/slurm_job")["value"]["job_id"]
    airflow.patch(task, {"new_state": "failed"})
    marked = time.monotonic()
    while (state := sacct_state(job_id)) not in ("CANCELLED", "COMPLETED", "FAILED"):
        assert time.monotonic() - marked < 30, f"job {job_id} still {state} 30 s after the task was marked failed"
        time.sleep(0.5)
    assert state == "CANCELLED"


def airflow_has(airflow: AirflowAPI, path: str) -> bool:
    try:
        airflow.get(path)
    except RuntimeError:
        return False
    return True


def sacct_state(job_id: int) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State"],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0].split()[0] if out else "UNKNOWN"
