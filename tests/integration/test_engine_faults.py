"""Faults of the distributed engine on the production profile (CeleryExecutor with Redis, two Celery
workers, two triggerers, PostgreSQL): a Celery worker killed mid-task, PostgreSQL restarted mid-run,
one triggerer stopped while it holds deferred Slurm tasks. Each time the task succeeds with exactly
one Slurm job, and the task's log says what happened to it.

On the ``local`` profile (LocalExecutor, one triggerer) the module skips and says why; CI runs on the
production profile, where ``FACTORY_REQUIRE_STACK=1`` makes a wrong profile a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from stack.airflow_api import AirflowAPI
from stack.manager import Stack
from stack.process import family
from stack.settings import StackPaths
from tests.integration.test_slurm_cancel_and_faults import begin as begin_run
from tests.integration.test_slurm_operator import TASK, identity, jobs_with_comment, sacct_state, task_log

BLOCKING_DAG = "slurm_job_example_blocking"  # waits in the worker; retries=2
DEFERRED_DAG = "slurm_job_example"  # deferred on slurmrestd
WORKERS = ("airflow-celery-worker-1", "airflow-celery-worker-2")
TRIGGERERS = ("airflow-triggerer", "airflow-triggerer-2")


@pytest.fixture(scope="module")
def stack(production_stack: Stack) -> Stack:
    return production_stack


@pytest.fixture
def runs(airflow: AirflowAPI, stack: Stack) -> Iterator[list[tuple[str, str]]]:
    started: list[tuple[str, str]] = []
    yield started
    stack.up(progress=lambda *_: None)  # whatever a test stopped runs again
    for dag, run_id in started:
        for job_id in jobs_with_comment(identity(dag, run_id)):
            os.system(f"scancel {int(job_id)} 2>/dev/null")


def triggers_of(run_ids: list[str]) -> dict[str, int | None]:
    """Which triggerer (its job id in Airflow's database) holds each run's trigger."""
    import sqlalchemy

    from stack.services.postgres import PostgreSQL
    from stack.settings import StackSecrets

    paths = StackPaths.from_env()
    engine = sqlalchemy.create_engine(PostgreSQL(paths, StackSecrets(paths)).url("airflow"))
    query = sqlalchemy.text("SELECT ti.run_id, t.triggerer_id FROM task_instance ti JOIN trigger t "
                            "ON t.id = ti.trigger_id WHERE ti.dag_id = :dag AND ti.run_id = ANY(:runs)")
    try:
        with engine.connect() as connection:
            rows = connection.execute(query, {"dag": DEFERRED_DAG, "runs": run_ids}).fetchall()
    finally:
        engine.dispose()
    return {run_id: triggerer for run_id, triggerer in rows}


def begin(airflow: AirflowAPI, runs: list, dag: str, seconds: int) -> tuple[str, str]:
    """The run (cleaned up by ``runs``) and its task's identity, the comment its jobs carry."""
    run_id = begin_run(airflow, runs, dag, seconds)
    return run_id, identity(dag, run_id)


def wait_for_running_job(airflow: AirflowAPI, dag: str, run_id: str, comment: str, task_state: str,
                         timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ti = airflow.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/{TASK}")
        assert ti["state"] not in ("failed", "success", "upstream_failed"), ti
        jobs = jobs_with_comment(comment)
        if ti["state"] == task_state and jobs and sacct_state(int(jobs[0])) == "RUNNING":
            return int(jobs[0])
        time.sleep(1)
    pytest.fail(f"{dag}/{run_id}: no running job with the task {task_state} in {timeout_s:.0f} s")


def worker_running(stack: Stack, dag: str, run_id: str) -> str:
    """The Celery worker that took the task's first try (each worker logs the workloads it executes)."""
    needle = f"dag_id={dag}/run_id={run_id}/task_id={TASK}/attempt=1"
    for name in WORKERS:
        if needle in stack.supervised(name).log_file.read_text(errors="replace"):
            return name
    pytest.fail(f"no Celery worker's log names {needle}")


def test_a_celery_worker_killed_mid_task_the_retry_adopts_the_job(airflow: AirflowAPI, stack: Stack, runs):
    run_id, comment = begin(airflow, runs, BLOCKING_DAG, seconds=100)
    job_id = wait_for_running_job(airflow, BLOCKING_DAG, run_id, comment, "running")
    worker = worker_running(stack, BLOCKING_DAG, run_id)
    pid = stack.supervised(worker).pid()
    assert pid
    # the whole tree: Airflow's task supervisor starts the task in a session of its own, so the worker's
    # process group is not enough (a crashed machine takes everything)
    tree = family(pid)
    assert len(tree) > 2, tree  # the worker, its pool and the task's processes
    for member in tree:  # as if its machine died: no on_kill, no goodbye
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    stack.up(progress=lambda *_: None)  # as an operator (or Kubernetes) would start it again
    run = airflow.wait_for_run(BLOCKING_DAG, run_id, timeout_s=600)
    ti = airflow.get(f"/dags/{BLOCKING_DAG}/dagRuns/{run_id}/taskInstances/{TASK}")
    assert run["state"] == "success" and ti["try_number"] >= 2, ti
    assert jobs_with_comment(comment) == [str(job_id)]  # adopted: no second job
    retry_log = task_log(airflow, BLOCKING_DAG, run_id, attempt=ti["try_number"])
    assert f"Adopting Slurm job {job_id}" in retry_log, retry_log[-3000:]


def test_postgresql_restarted_mid_run_the_run_resumes_and_loses_nothing(airflow: AirflowAPI, stack: Stack, runs):
    run_id, comment = begin(airflow, runs, DEFERRED_DAG, seconds=60)
    job_id = wait_for_running_job(airflow, DEFERRED_DAG, run_id, comment, "deferred")
    stack.restart(["postgres"], progress=lambda *_: None)
    run = airflow.wait_for_run(DEFERRED_DAG, run_id, timeout_s=600)
    assert run["state"] == "success"
    assert jobs_with_comment(comment) == [str(job_id)]
    log = task_log(airflow, DEFERRED_DAG, run_id)
    assert "tick 60" in log and f"Slurm job {job_id}" in log  # the whole output, from the one job


def test_a_stopped_triggerer_hands_its_deferred_tasks_to_the_other_and_their_jobs_run_on(
        airflow: AirflowAPI, stack: Stack, runs):
    """The first triggerer alone takes the triggers (the second is stopped meanwhile), then the second runs
    again and the first is stopped: its deferred tasks move, keep their jobs and succeed."""
    first, second = TRIGGERERS
    stack.up(progress=lambda *_: None)  # both run to begin with
    assert stack.stop(second)
    try:
        started = [begin(airflow, runs, DEFERRED_DAG, seconds=90) for _ in range(2)]
        jobs = {run_id: wait_for_running_job(airflow, DEFERRED_DAG, run_id, comment, "deferred")
                for run_id, comment in started}
    finally:
        stack.up(progress=lambda *_: None)  # the second triggerer back
    deadline = time.monotonic() + 30  # a trigger is assigned at the triggerer's next loop
    while None in (held := triggers_of(list(jobs))).values() and time.monotonic() < deadline:
        time.sleep(1)
    assert len(set(held.values())) == 1 and None not in held.values(), held  # all on the first one
    assert stack.stop(first)
    try:
        deadline = time.monotonic() + 120  # the second adopts them after [triggerer] health check threshold
        while time.monotonic() < deadline and set(triggers_of(list(jobs)).values()) & set(held.values()):
            time.sleep(2)
        moved = triggers_of(list(jobs))
        for run_id, comment in started:
            run = airflow.wait_for_run(DEFERRED_DAG, run_id, timeout_s=600)
            assert run["state"] == "success", run_id
            assert jobs_with_comment(comment) == [str(jobs[run_id])], run_id
    finally:
        stack.up(progress=lambda *_: None)
    assert not set(moved.values()) & set(held.values()), (held, moved)  # another triggerer took them over
    for run_id, _ in started:
        log = task_log(airflow, DEFERRED_DAG, run_id)
        # the task's log shows the trigger starting a second time, on the other triggerer, and the whole output
        assert log.count(f"trigger {DEFERRED_DAG}/{run_id}/{TASK}/-1/1 (ID") >= 2, log[-3000:]
        assert "tick 90" in log
