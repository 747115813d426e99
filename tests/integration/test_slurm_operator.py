"""SlurmJobOperator through real Airflow and the real cluster, on every transport, with faults injected:
a killed worker, a restarted triggerer, a restarted slurmctld, scancel from outside, OOM, TIMEOUT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from operators.slurm.script import BatchJob, render
from operators.slurm.transports import make_transport
from stack.manager import Stack

TRANSPORT_DAGS = {"rest": "slurm_job_example", "local": "slurm_job_example_cli", "ssh": "slurm_job_example_ssh"}
TASK = "run_job"


def run_here(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def jobs_with_comment(comment: str, run: Callable[[list[str]], str] = run_here) -> list[str]:
    """The jobs carrying ``comment``, live (squeue) or ended (sacct: Slurm 22.05 stores a job's comment in
    accounting only once it ends); ``run`` runs the commands (here, or on a site's node)."""
    live = run(["squeue", "-h", "-a", "-o", "%i|%k"])
    ended = run(["sacct", "-X", "-n", "-P", "--starttime", "now-1days", "-o", "JobID,Comment"])
    return sorted({line.split("|")[0] for line in (live + ended).splitlines() if line.split("|", 1)[1] == comment})


def sacct_state(job_id: int) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "State"],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0].split()[0] if out else "UNKNOWN"


def task_log(airflow, dag: str, run_id: str, attempt: int = 1) -> str:
    return json.dumps(airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}/logs/{attempt}"
                                  "?full_content=true"))


# Airflow 3.3's scheduler can fail a task whose job ends within seconds of its deferral: the worker's
# "success" for the defer exit, read late, finds the resumed task QUEUED (it only guards SCHEDULED).
# Jobs of the tests that assert a task's own outcome run longer than that window.
OUTLASTS_DEFER_RACE_S = 8


def start(airflow, dag: str, **conf) -> str:
    run_id = f"{dag[-4:]}-{uuid.uuid4().hex[:10]}"
    airflow.wait_for_dag(dag)
    airflow.trigger(dag, {"seconds": 1, "exit_code": 0, **conf}, run_id=run_id)
    return run_id


def wait_for_running_job(airflow, dag: str, run_id: str, timeout_s: float = 120) -> int:
    """The job id once the job runs and, for deferrable tasks, the triggerer watches it."""
    task = f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}"
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, f"{dag}/{run_id}: no running Slurm job after {timeout_s} s"
        try:
            job = airflow.get(f"{task}/xcomEntries/slurm_job")["value"]
        except RuntimeError:
            time.sleep(0.5)
            continue
        if sacct_state(job["job_id"]) == "RUNNING" and (
                dag.endswith("blocking") or "starting" in task_log(airflow, dag, run_id).split("trigger ", 1)[-1]):
            return int(job["job_id"])
        time.sleep(0.5)


def identity(dag: str, run_id: str) -> str:
    return f"airflow:{dag}/{run_id}/{TASK}/-1"


@pytest.mark.parametrize("transport", list(TRANSPORT_DAGS))
def test_job_output_streams_into_the_task_log_and_accounting_comes_back(airflow, transport):
    dag = TRANSPORT_DAGS[transport]
    run_id = start(airflow, dag, seconds=OUTLASTS_DEFER_RACE_S)
    assert airflow.wait_for_run(dag, run_id, timeout_s=180)["state"] == "success"
    result = airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}/xcomEntries/return_value")["value"]
    assert result["state"] == "COMPLETED" and result["exit_code"] == 0 and result["transport"] == transport
    assert result["user"] == "hpcuser" and result["elapsed_s"] >= 3 and result["cpu_time_s"] is not None
    assert result["gpu_hours"] == 0.0
    log = task_log(airflow, dag, run_id)
    for tick in (1, 2, 3):  # streamed by the triggerer while the job ran, line by line
        assert f"[job {result['job_id']}] tick {tick}" in log
    assert jobs_with_comment(identity(dag, run_id)) == [str(result["job_id"])]


@pytest.mark.parametrize("transport", list(TRANSPORT_DAGS))
def test_exit_code_and_log_tail_reach_the_task(airflow, transport):
    dag = TRANSPORT_DAGS[transport]
    run_id = start(airflow, dag, seconds=OUTLASTS_DEFER_RACE_S, exit_code=3)
    assert airflow.wait_for_run(dag, run_id, timeout_s=180)["state"] == "failed"
    log = task_log(airflow, dag, run_id)
    assert "ended FAILED with exit code 3" in log
    assert "as hpcuser" in log, "the tail of the job's own log is in the failure"


@pytest.mark.parametrize("transport", list(TRANSPORT_DAGS))
def test_marking_a_deferred_task_failed_cancels_its_job(airflow, transport):
    dag = TRANSPORT_DAGS[transport]
    run_id = start(airflow, dag, seconds=300)
    job_id = wait_for_running_job(airflow, dag, run_id)
    airflow.patch(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}", {"new_state": "failed"})
    marked = time.monotonic()
    while (state := sacct_state(job_id)) not in ("CANCELLED", "COMPLETED", "FAILED"):
        assert time.monotonic() - marked < 30, f"job {job_id} still {state} 30 s after the task was marked failed"
        time.sleep(0.5)
    assert state == "CANCELLED"


def test_a_job_left_by_an_earlier_try_is_adopted_not_submitted_again(airflow, stack_info):
    """A lost submit answer: the job exists, the task state store does not know it; its comment does."""
    dag, rest = TRANSPORT_DAGS["rest"], stack_info["slurmrestd"]
    run_id = f"adopt-{uuid.uuid4().hex[:10]}"
    transport = make_transport("rest", files="shared", base_url=rest["url"], user=rest["user"], token=rest["token"])
    workdir = f"{stack_info['jobs_dir']}/adopt-{run_id}"
    job = BatchJob(name="earlier-try", account=stack_info["account"], partition=None, cpus=1, memory="64M",
                   time="00:02:00", gpus=0, workdir=workdir, comment=identity(dag, run_id),
                   commands=[["bash", "-c", "echo submitted by an earlier try; sleep 6"]])
    transport.stage(workdir, {}, stack_info["job_user"])
    earlier = transport.submit(job, render(job))
    airflow.trigger(dag, {"seconds": 1, "exit_code": 0}, run_id=run_id)
    assert airflow.wait_for_run(dag, run_id, timeout_s=180)["state"] == "success"
    result = airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}/xcomEntries/return_value")["value"]
    assert result["job_id"] == earlier
    assert jobs_with_comment(identity(dag, run_id)) == [str(earlier)], "exactly one job for the task"


def kill_running_task_processes() -> list[int]:
    """SIGKILL the task processes that Airflow's task supervisors run (LocalExecutor: the executor's worker
    process; CeleryExecutor: the pool process renamed ``airflow supervisor: <ti>``): a crashed task, seen from
    its supervisor. (The whole Celery worker killed is ``test_engine_faults.py``.)"""
    killed = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
                parent_command = cmdline.read().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        local_task = parent_command.startswith("airflow worker -- LocalExecutor") and "<idle>" not in parent_command
        if local_task or parent_command.startswith("airflow supervisor:"):
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))
    return killed


def test_a_killed_worker_s_retry_adopts_the_job_from_the_task_state_store(airflow):
    dag = "slurm_job_example_blocking"
    run_id = start(airflow, dag, seconds=12)
    job_id = wait_for_running_job(airflow, dag, run_id)
    assert kill_running_task_processes(), "no running task process found to kill"
    assert airflow.wait_for_run(dag, run_id, timeout_s=180)["state"] == "success"
    result = airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}/xcomEntries/return_value")["value"]
    assert result["job_id"] == job_id
    assert jobs_with_comment(identity(dag, run_id)) == [str(job_id)], "sacct shows exactly one job"
    retry_log = task_log(airflow, dag, run_id, attempt=2)
    assert "Adopting Slurm job" in retry_log and "task state store" in retry_log


@pytest.mark.parametrize("service", ["airflow-triggerer", "slurmctld"])
def test_a_restart_mid_job_neither_fails_the_task_nor_submits_again(airflow, service):
    dag = TRANSPORT_DAGS["rest"]
    run_id = start(airflow, dag, seconds=20)
    job_id = wait_for_running_job(airflow, dag, run_id)
    Stack().restart([service], progress=lambda _line: None)
    assert airflow.wait_for_run(dag, run_id, timeout_s=240)["state"] == "success"
    assert jobs_with_comment(identity(dag, run_id)) == [str(job_id)]


def test_a_job_cancelled_outside_airflow_fails_the_task_with_its_state(airflow, stack_info):
    dag = TRANSPORT_DAGS["local"]
    run_id = start(airflow, dag, seconds=120)
    job_id = wait_for_running_job(airflow, dag, run_id)
    subprocess.run(["runuser", "-u", stack_info["job_user"], "--", "scancel", str(job_id)], check=True)
    assert airflow.wait_for_run(dag, run_id, timeout_s=120)["state"] == "failed"
    assert f"Slurm job {job_id} ended CANCELLED" in task_log(airflow, dag, run_id)


def test_out_of_memory_is_reported_as_such(airflow):
    dag = TRANSPORT_DAGS["ssh"]
    run_id = start(airflow, dag, seconds=OUTLASTS_DEFER_RACE_S, memory="64M", allocate_mb=400)
    assert airflow.wait_for_run(dag, run_id, timeout_s=180)["state"] == "failed"
    assert "ended OUT_OF_MEMORY" in task_log(airflow, dag, run_id)


def test_time_limit_ends_as_timeout(airflow):
    """Limits are whole minutes and checked every ~30 s: this takes 60-90 s."""
    dag = TRANSPORT_DAGS["rest"]
    run_id = start(airflow, dag, seconds=300, time_limit="1")
    assert airflow.wait_for_run(dag, run_id, timeout_s=240)["state"] == "failed"
    assert "ended TIMEOUT" in task_log(airflow, dag, run_id)


@pytest.fixture(scope="module")
def tight_account(stack_info):
    """An account granted 30 CPU-minutes (GrpTRESMins), the job user's second association."""
    cluster = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    name = next(line.split("=", 1)[1].strip() for line in cluster.splitlines() if line.startswith("ClusterName"))
    sacctmgr = ["sacctmgr", "-i"]
    subprocess.run([*sacctmgr, "add", "account", "tight", f"cluster={name}", "GrpTRESMins=cpu=30"],
                   capture_output=True, text=True)
    subprocess.run([*sacctmgr, "modify", "account", "tight", "set", "GrpTRESMins=cpu=30"], capture_output=True)
    subprocess.run([*sacctmgr, "add", "user", stack_info["job_user"], "account=tight", f"cluster={name}"],
                   capture_output=True, text=True)
    deadline = time.monotonic() + 30
    while "cpu=30" not in subprocess.run(["sshare", "-n", "-P", "-A", "tight", "-o", "Account,GrpTRESMins"],
                                         capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "slurmctld did not learn the tight account's limit"
        time.sleep(0.5)
    yield "tight"
    subprocess.run([*sacctmgr, "delete", "user", stack_info["job_user"], "account=tight"], capture_output=True)
    subprocess.run([*sacctmgr, "delete", "account", "tight"], capture_output=True)


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_a_job_larger_than_the_allocation_left_is_refused_before_submission(airflow, tight_account, transport):
    """Slurm would queue it forever (AssocGrpCPUMinutesLimit); the task fails at once with both figures."""
    dag = TRANSPORT_DAGS[transport]
    run_id = start(airflow, dag, account=tight_account, time_limit="01:00:00")
    assert airflow.wait_for_run(dag, run_id, timeout_s=120)["state"] == "failed"
    log = task_log(airflow, dag, run_id)
    assert "Slurm job not submitted: allocation tight:" in log
    assert "CPU-minutes left of 30 (account tight)" in log and "up to 60 CPU-minutes" in log
    assert jobs_with_comment(identity(dag, run_id)) == [], "nothing was submitted"
    fits = start(airflow, dag, account=tight_account, time_limit="00:05:00", seconds=OUTLASTS_DEFER_RACE_S)
    assert airflow.wait_for_run(dag, fits, timeout_s=180)["state"] == "success"
    result = airflow.get(f"/dags/{dag}/dagRuns/{fits}/taskInstances/{TASK}/xcomEntries/return_value")["value"]
    assert 0 <= result["allocation"]["cpu"] <= 30, result["allocation"]
