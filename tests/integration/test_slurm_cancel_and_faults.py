"""Cancelling Slurm jobs from Airflow, and faults around a deferred Slurm task, through real Airflow and the
real cluster: a cleared task, a run marked failed, a task marked failed while no triggerer ran, a job requeued
past its limit, slurmrestd gone past the unreachable limit, and the SSH login connection dropped mid-job."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from operators.slurm.model import TERMINAL_STATES, SlurmUnavailable
from operators.slurm.transport import SlurmTransport
from operators.units import elapsed_seconds
from stack.airflow_api import FINISHED, AirflowAPI
from stack.manager import Stack
from tests.integration.test_slurm_operator import (
    TASK,
    TRANSPORT_DAGS,
    identity,
    jobs_with_comment,
    sacct_state,
    task_log,
)
from tests.integration.test_slurm_transports import build_transport, wait_for

DAG = TRANSPORT_DAGS["rest"]  # the airflow fixture waits for it to be parsed
REQUEUE_DAG = "slurm_job_example_requeue"  # requeue=True, max_restarts=1
UNREACHABLE_DAG = "slurm_job_example_unreachable"  # unreachable_limit_s=15 on slurmrestd
UNREACHABLE_LIMIT_S = 15
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING",
                 "REQUEUE_HOLD", "REQUEUE_FED"}
ENDED_TASK_STATES = {"success", "failed", "skipped", "upstream_failed", "removed"}


# ---------------------------------------------------------------------------------------------- helpers

def task_path(dag: str, run_id: str) -> str:
    return f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}"


def scontrol_job(job_id: int) -> dict[str, str]:
    """``scontrol show job`` as key=value pairs (JobState, Reason, Restarts, ...); empty once forgotten."""
    done = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", done.stdout)) if done.returncode == 0 else {}


def wait_for_job_to_end(job_id: int, timeout_s: float, after: str) -> str:
    """The job's final state from accounting; fails naming ``after`` (what should have ended it)."""
    began = time.monotonic()
    while (state := sacct_state(job_id)) in ACTIVE_STATES | {"UNKNOWN"}:
        if time.monotonic() - began > timeout_s:
            pytest.fail(f"Slurm job {job_id} still {state} {timeout_s:.0f} s after {after}")
        time.sleep(0.5)
    return state


def controller_state(job_id: int) -> str:
    """The job's state as slurmctld lists it (it keeps ended jobs for MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip() or "UNKNOWN"


def wait_for_watched_job(airflow: AirflowAPI, dag: str, run_id: str, attempt: int = 1,
                         not_job: int | None = None, timeout_s: float = 120) -> int:
    """The job id of try ``attempt`` once its job runs and the triggerer's trigger has started on it;
    fails at once, with the task's error, if that try ends first."""
    def probe() -> int | None:
        ti = airflow.get(task_path(dag, run_id))
        if ti["try_number"] == attempt and ti["state"] in ENDED_TASK_STATES:
            pytest.fail(f"{dag}/{run_id} try {attempt} ended {ti['state']} before a job of its own ran: "
                        f"{task_error(airflow, dag, run_id, attempt)}")
        try:
            job = airflow.get(f"{task_path(dag, run_id)}/xcomEntries/slurm_job")["value"]
        except RuntimeError:  # not pushed yet (a cleared task's xcom is gone until its new try pushes)
            return None
        if int(job["job_id"]) == not_job or sacct_state(job["job_id"]) != "RUNNING":
            return None
        log = task_log(airflow, dag, run_id, attempt)
        return int(job["job_id"]) if "starting" in log.split("trigger ", 1)[-1] else None

    return wait_for(f"{dag}/{run_id} try {attempt}: a running, watched Slurm job", probe, timeout_s, 0.5)


def task_error(airflow: AirflowAPI, dag: str, run_id: str, attempt: int) -> str:
    """The exception a try failed with, from its log (empty if it has none)."""
    entries = airflow.get(f"{task_path(dag, run_id)}/logs/{attempt}?full_content=true")["content"]
    errors = [detail.get("exc_value", "") for entry in entries if isinstance(entry, dict)
              for detail in entry.get("error_detail") or []]
    return errors[-1] if errors else ""


def active_jobs_with_comment(comment: str) -> list[int]:
    out = subprocess.run(["squeue", "--noheader", "--format=%i|%k"], capture_output=True, text=True).stdout
    return [int(job_id) for job_id, _, text in (line.partition("|") for line in out.splitlines())
            if text.strip() == comment and job_id.strip().isdigit()]


def scancel(job_id: int) -> None:
    subprocess.run(["scancel", str(job_id)], capture_output=True)


@pytest.fixture
def runs(airflow: AirflowAPI) -> Iterator[list[tuple[str, str]]]:
    """(dag, run id) of the runs a test starts: at teardown a run still going is marked failed and
    any job of its task still in the queue is cancelled, whatever the test asserted."""
    started: list[tuple[str, str]] = []
    yield started
    for dag, run_id in started:
        with contextlib.suppress(RuntimeError):
            if airflow.get(f"/dags/{dag}/dagRuns/{run_id}")["state"] not in FINISHED:
                airflow.patch(f"/dags/{dag}/dagRuns/{run_id}", {"state": "failed"})
        for job_id in active_jobs_with_comment(identity(dag, run_id)):
            scancel(job_id)


def triggerer_pids() -> list[int]:
    """Every ``airflow triggerer`` main process on this host (its runner child has the same command line)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if len(argv) > 2 and argv[1].endswith(b"/airflow") and argv[2] == b"triggerer":
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return sorted(pid for pid, parent in parents.items() if parent not in parents)


def begin(airflow: AirflowAPI, runs: list[tuple[str, str]], dag: str, seconds: int) -> str:
    """Trigger one run of an example DAG whose job ticks for ``seconds``; teardown cleans up after it."""
    run_id = f"{dag[-4:]}-{uuid.uuid4().hex[:10]}"
    airflow.wait_for_dag(dag)
    runs.append((dag, run_id))
    airflow.trigger(dag, {"seconds": seconds, "exit_code": 0}, run_id=run_id)
    return run_id


def start_again(stack: Stack, name: str) -> None:
    """Start the service this test stopped (and wait until it is healthy). ``up`` holds the stack's lock,
    so it cannot race someone restarting other services into starting one twice."""
    if stack.supervised(name).pid() is None:
        stack.up(progress=lambda *_: None)


# ------------------------------------------------------------------------------ cancelling from Airflow

def test_clearing_a_deferred_task_cancels_its_job_and_the_new_try_submits_another(airflow, runs):
    run_id = begin(airflow, runs, DAG, seconds=300)
    first_job = wait_for_watched_job(airflow, DAG, run_id)
    cleared = airflow.post(f"/dags/{DAG}/clearTaskInstances",
                           {"dag_run_id": run_id, "task_ids": [TASK], "only_failed": False, "dry_run": False})
    assert [ti["task_id"] for ti in cleared["task_instances"]] == [TASK], cleared
    assert wait_for_job_to_end(first_job, 30, "the task was cleared") == "CANCELLED"

    second_job = wait_for_watched_job(airflow, DAG, run_id, attempt=2, not_job=first_job)
    assert airflow.get(task_path(DAG, run_id))["try_number"] == 2

    airflow.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})
    assert wait_for_job_to_end(second_job, 30, "the run was marked failed") == "CANCELLED"
    both = sorted([str(first_job), str(second_job)])  # slurmdbd stores a job's comment when the job ends
    wait_for("sacct listing both tries' jobs, and no other",
             lambda: True if sorted(jobs_with_comment(identity(DAG, run_id))) == both else None, timeout_s=20)


def test_marking_the_run_failed_cancels_its_job(airflow, runs):
    run_id = begin(airflow, runs, DAG, seconds=300)
    job_id = wait_for_watched_job(airflow, DAG, run_id)
    airflow.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})
    assert wait_for_job_to_end(job_id, 30, "the run was marked failed") == "CANCELLED"
    assert airflow.get(task_path(DAG, run_id))["state"] == "failed"


def test_a_task_marked_failed_while_no_triggerer_ran_still_gets_its_job_cancelled(airflow, runs):
    """The trigger never started, so Airflow never calls its on_kill: only the reconciler (dag
    ``slurm_job_reconciler``) can cancel the job, once a triggerer runs again."""
    stack = Stack()
    names = sorted(name for name in stack.services if name.startswith("airflow-triggerer"))  # 1 or 2 by profile
    managed = {stack.supervised(name).pid() for name in names}
    unmanaged = [pid for pid in triggerer_pids() if pid not in managed]
    if unmanaged:
        pytest.skip(f"triggerer process(es) {unmanaged} run outside the stack manager: stopping the stack's "
                    "triggerers would not keep the trigger from starting")
    try:
        for name in names:  # no triggerer at all, whatever the profile
            stack.stop(name)
        run_id = begin(airflow, runs, DAG, seconds=300)

        def deferred_job() -> int | None:
            if airflow.get(task_path(DAG, run_id))["state"] != "deferred":
                return None
            return int(airflow.get(f"{task_path(DAG, run_id)}/xcomEntries/slurm_job")["value"]["job_id"])

        job_id = wait_for(f"{DAG}/{run_id}: task deferred with a submitted job", deferred_job, 120, 0.5)
        assert active_jobs_with_comment(identity(DAG, run_id)) == [job_id]
        airflow.patch(task_path(DAG, run_id), {"new_state": "failed"})
    finally:
        for name in names:
            start_again(stack, name)  # never leave the stack without its triggerers
    assert airflow.get(task_path(DAG, run_id))["state"] == "failed"
    state = wait_for_job_to_end(job_id, 60, "the triggerer came back (the task was marked failed while none ran)")
    assert state == "CANCELLED"


# ------------------------------------------------------------------------------------------------ faults

def requeue_and_release(job_id: int) -> None:
    """``scontrol requeue`` a running job, then let it start again at once: 22.05 holds a requeued
    job with reason BeginTime for about two minutes."""
    subprocess.run(["scontrol", "requeue", str(job_id)], check=True, capture_output=True)
    wait_for(f"job {job_id} back in the queue",
             lambda: True if scontrol_job(job_id).get("JobState") == "PENDING" else None, 30, 0.25)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, capture_output=True)


def wait_for_second_run(job_id: int, log: Path) -> None:
    """Until the requeued job has run again for 2 s; fails at once, with its log, if it ends instead."""
    def probe() -> bool | None:
        job = scontrol_job(job_id)
        if job.get("JobState") in TERMINAL_STATES:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
            pytest.fail(f"Slurm job {job_id} ended {job['JobState']} (reason {job.get('Reason')}) when it "
                        f"started again after its requeue; end of {log}:\n{tail}")
        ran_s = elapsed_seconds(job.get("RunTime", "")) or 0
        return True if job.get("JobState") == "RUNNING" and ran_s >= 2 else None

    wait_for(f"job {job_id} running again after its first requeue", probe, 60, 0.25)


def test_a_job_requeued_more_often_than_max_restarts_fails_the_task_and_is_cancelled(airflow, runs):
    run_id = begin(airflow, runs, REQUEUE_DAG, seconds=120)
    job_id = wait_for_watched_job(airflow, REQUEUE_DAG, run_id)
    workdir = airflow.get(f"{task_path(REQUEUE_DAG, run_id)}/xcomEntries/slurm_job")["value"]["workdir"]
    requeue_and_release(job_id)
    wait_for_second_run(job_id, Path(workdir, f"slurm-{job_id}.out"))
    assert scontrol_job(job_id)["Restarts"] == "1"
    assert airflow.get(task_path(REQUEUE_DAG, run_id))["state"] == "deferred", "one requeue is within the limit"

    subprocess.run(["scontrol", "requeue", str(job_id)], check=True, capture_output=True)
    assert airflow.wait_for_run(REQUEUE_DAG, run_id, timeout_s=60)["state"] == "failed"
    log = task_log(airflow, REQUEUE_DAG, run_id)
    assert "RESTART_LIMIT" in log and "more than max_restarts=1" in log, log[-3000:]
    # 22.05's accounting keeps showing the REQUEUED row of a job cancelled while pending: ask the controller
    assert wait_for("the controller to list the job CANCELLED", lambda: controller_state(job_id)
                    if controller_state(job_id) == "CANCELLED" else None, timeout_s=30) == "CANCELLED"
    assert not Path(workdir, "job.env").exists(), "a requeueable job's credentials outlived the failed task"


def test_slurmrestd_gone_past_the_unreachable_limit_fails_the_task_and_leaves_the_job(airflow, runs):
    """The controller was unreachable, not the job broken: the task fails naming the limit, the job runs on."""
    run_id = begin(airflow, runs, UNREACHABLE_DAG, seconds=90)
    job_id = wait_for_watched_job(airflow, UNREACHABLE_DAG, run_id)
    stack = Stack()
    try:
        stack.supervised("slurmrestd").stop()
        stopped = time.monotonic()
        try:
            # the breaker's pauses double (1, 2, 4, 8, 16 s): it gives up by twice the limit, plus the task's resume
            run = airflow.wait_for_run(UNREACHABLE_DAG, run_id, timeout_s=4 * UNREACHABLE_LIMIT_S)
        except TimeoutError:
            pytest.fail(f"the task still runs {time.monotonic() - stopped:.0f} s after slurmrestd stopped, "
                        f"with unreachable_limit_s={UNREACHABLE_LIMIT_S}")
        assert run["state"] == "failed"
        log = task_log(airflow, UNREACHABLE_DAG, run_id)
        assert f"Slurm job {job_id}: UNREACHABLE" in log, log[-3000:]
        assert f"(limit {UNREACHABLE_LIMIT_S} s)" in log and "no answer from the Slurm controller" in log
        assert sacct_state(job_id) == "RUNNING", "a controller that did not answer is no reason to cancel the job"
    finally:
        start_again(stack, "slurmrestd")
        scancel(job_id)


# ---------------------------------------------------------------------------- SSH login connection drops

def ssh_master_pid(transport: SlurmTransport) -> int | None:
    """The pid of the OpenSSH master behind the transport's control socket, if one is running."""
    runner = transport.control.runner
    check = subprocess.run(["ssh", *runner._options(), "-O", "check", f"{runner.user}@{runner.host}"],
                           capture_output=True, text=True)
    found = re.search(r"pid=(\d+)", check.stderr)
    return int(found.group(1)) if check.returncode == 0 and found else None


def established(port_filter: str) -> list[str]:
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( {port_filter} )"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def drop_master_connection(transport: SlurmTransport, job_user: str) -> list[int]:
    """SIGKILL the login node's side of the master's TCP connection (the ``sshd: user@notty`` session
    process), as a firewall reset or a restarted login node would: never the listening sshd."""
    master, port = ssh_master_pid(transport), transport.control.runner.port
    if master is None:
        return []
    client_ports = {line.split()[2].rsplit(":", 1)[1] for line in established(f"dport = :{port}")
                    if f"pid={master}," in line}
    uid = pwd.getpwnam(job_user).pw_uid
    killed = []
    for line in established(f"sport = :{port}"):
        if line.split()[3].rsplit(":", 1)[1] not in client_ports:
            continue
        for pid in (int(pid) for pid in re.findall(r"pid=(\d+)", line)):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                with open(f"/proc/{pid}/status") as status:
                    owner = int(re.search(r"^Uid:\s+(\d+)", status.read(), re.MULTILINE).group(1))
                if owner == uid:
                    subprocess.run(["kill", "-KILL", str(pid)], check=True)
                    killed.append(pid)
    return killed


def test_a_dropped_ssh_connection_mid_job_costs_neither_the_task_nor_a_second_job(airflow, runs, stack_info):
    """The triggerer and the tasks share one master connection: it is dropped twice while the job runs."""
    dag = TRANSPORT_DAGS["ssh"]
    shared = build_transport("ssh", stack_info)  # same control socket as the triggerer's (both root)
    run_id = begin(airflow, runs, dag, seconds=15)
    job_id = wait_for_watched_job(airflow, dag, run_id)
    assert drop_master_connection(shared, stack_info["job_user"]), "no master connection to drop"
    time.sleep(4)
    wait_for("the shared SSH master reconnecting", lambda: ssh_master_pid(shared), 20, 0.25)
    assert drop_master_connection(shared, stack_info["job_user"]), "the master did not reconnect"

    assert airflow.wait_for_run(dag, run_id, timeout_s=120)["state"] == "success"
    assert jobs_with_comment(identity(dag, run_id)) == [str(job_id)], "exactly one job for the task"
    log = task_log(airflow, dag, run_id)
    assert f"[job {job_id}] tick 15" in log, "the log stream lost its end across the reconnects"


def test_a_command_cut_off_by_a_dropped_connection_is_transient_and_the_next_reconnects(stack_info):
    # a master of its own (short folder: a unix socket path may not exceed 107 bytes): other users of
    # the shared one are not disturbed
    with tempfile.TemporaryDirectory(prefix="tt-ssh-", dir="/tmp") as control_dir:
        transport = build_transport("ssh", stack_info, control_dir=control_dir)
        marker = f"{5 + uuid.uuid4().int % 1000 / 1000:.3f}"  # a sleep duration no other process uses
        outcome: dict[str, Any] = {}

        def long_command() -> None:
            try:
                outcome["answer"] = transport.control.runner.run(["sleep", marker])
            except Exception as error:  # what the caller (the breaker) would get
                outcome["error"] = error

        caller = threading.Thread(target=long_command)
        caller.start()
        try:
            wait_for("the remote sleep to start",
                     lambda: True if subprocess.run(["pgrep", "-u", stack_info["job_user"], "-fx", f"sleep {marker}"],
                                                    capture_output=True).returncode == 0 else None, 15, 0.1)
            first_master = ssh_master_pid(transport)
            assert drop_master_connection(transport, stack_info["job_user"]), "no server-side session to kill"
        finally:
            caller.join(timeout=30)
        assert not caller.is_alive(), "the cut-off command never returned"
        assert "answer" not in outcome, "the command finished although its connection was dropped"
        assert isinstance(outcome["error"], SlurmUnavailable), repr(outcome["error"])

        assert isinstance(transport.jobs(), dict)
        assert ssh_master_pid(transport) not in (None, first_master), "no new master after the drop"
        runner = transport.control.runner
        subprocess.run(["ssh", *runner._options(), "-O", "exit", f"{runner.user}@{runner.host}"], capture_output=True)
