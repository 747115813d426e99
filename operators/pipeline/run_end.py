"""``end_run``: the teardown of ``start_run``, so an MLflow run never stays ``RUNNING``.

The jobs end the run they log into when they exit normally. A job that dies (node failure, time limit,
out of memory, a crash before it opened the run), a task marked failed in Airflow, or a run cancelled
there leaves the run ``RUNNING`` for ever, and a project lead cannot tell a live run from a dead one.
Airflow runs a teardown whatever happened upstream, also after a user marked the whole run failed, so
this task sees every ending; it first waits for the run's jobs to leave Slurm's queue (a cancelled job
is still writing), then ends the run with the reason as the tag ``factory.end_reason``.

It also gives the Airflow run its verdict. A run marked failed while a teardown is pending is left for
the scheduler to settle by its leaves, all skipped by then: it would end ``success``. So this task is
the run's only leaf (built with ``on_failure_fail_dagrun`` and ``all_done``, it runs even when
``start_run`` never did) and fails, naming why, whenever a task failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from operators.records import TrackingRun
from operators.slurm.model import JobStatus, SlurmError
from operators.slurm.reconciler import TaskIdentity
from operators.slurm.script import JOB_ENV_FILE

END_REASON_TAG = "factory.end_reason"
QUEUE_WAIT_S = 120.0
CANCELLED_STATES = frozenset({"CANCELLED", "DEADLINE"})
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})


@dataclass(frozen=True)
class RunEnd:
    """How the MLflow run ends (``FINISHED``, ``FAILED`` or ``KILLED``) and why, in one line."""

    status: str
    reason: str


def jobs_of_run(jobs: Iterable[JobStatus], dag_id: str, run_id: str) -> dict[str, JobStatus]:
    """The run's jobs by task id, the newest per task (a retry's job replaces the one before)."""
    found: dict[str, JobStatus] = {}
    for job in sorted(jobs, key=lambda status: status.job_id):
        identity = TaskIdentity.parse(job.comment)
        if identity is not None and identity.dag_id == dag_id and identity.run_id == run_id:
            found[identity.task_id] = job
    return found


def decide_end(task_states: Mapping[str, str | None], jobs: Mapping[str, JobStatus]) -> RunEnd:
    """``KILLED`` when a job of the run was cancelled (by a user, by Airflow marking its task failed, or by
    an administrator); ``FAILED`` when a task failed or its job died; ``FINISHED`` when every task ended
    well (success or skipped)."""
    failed = sorted(task for task, state in task_states.items() if state == "failed")
    stopped = bool(failed) and "upstream_failed" not in task_states.values()
    cancelled = [f"Slurm job {job.job_id} ({task}) {job.state}" for task, job in sorted(jobs.items())
                 if job.state in CANCELLED_STATES]
    if cancelled:
        return RunEnd("KILLED", "; ".join(cancelled))
    if stopped:  # Airflow skipped what had not run and left the running task failed
        return RunEnd("KILLED", f"the Airflow run was marked failed while {', '.join(failed)} ran")
    if failed:
        return RunEnd("FAILED", "; ".join(_failed_task(task, jobs.get(task)) for task in failed))
    blocked = sorted(task for task, state in task_states.items() if state in FAILED_TASK_STATES)
    if blocked:
        return RunEnd("FAILED", f"upstream failed: {', '.join(blocked)}")
    unfinished = sorted(task for task, state in task_states.items() if state not in ("success", "skipped"))
    if unfinished:  # a run marked failed before these started: they were skipped or never ran
        return RunEnd("KILLED", f"the Airflow run ended before {', '.join(unfinished)} ran")
    return RunEnd("FINISHED", "every task of the pipeline run succeeded")


def _failed_task(task: str, job: JobStatus | None) -> str:
    if job is None or not job.finished:
        return f"task {task} failed"
    code = "" if job.exit_code is None else f" with exit code {job.exit_code}"
    return f"task {task} failed: Slurm job {job.job_id} ended {job.state}{code}"


def wait_for_jobs_to_leave_queue(read_jobs: Callable[[], Iterable[JobStatus]], dag_id: str, run_id: str,
                                 timeout_s: float = QUEUE_WAIT_S, poll_s: float = 5.0,
                                 clock: Callable[[], float] = time.monotonic,
                                 sleep: Callable[[float], None] = time.sleep) -> dict[str, JobStatus]:
    """The run's jobs once none is pending or running (or at ``timeout_s``): a job that is still being
    cancelled may still write to the run, and its end state says why the run ended."""
    deadline = clock() + timeout_s
    while True:
        jobs = jobs_of_run(read_jobs(), dag_id, run_id)
        active = [job for job in jobs.values() if not job.finished]
        if not active or clock() >= deadline:
            if active:
                print(f"Still in Slurm's queue after {timeout_s:.0f} s: "
                      f"{', '.join(f'{job.job_id} {job.state}' for job in active)}")
            return jobs
        print(f"Waiting for job(s) {', '.join(str(job.job_id) for job in active)} to leave Slurm's queue")
        sleep(poll_s)


def end_run(spec: Any, **context: Any) -> dict[str, str]:
    """End the MLflow run if its jobs did not, then give the pipeline run's verdict: fail, naming why, when
    any task failed (this task is the run's only leaf, so its state is the Airflow run's state)."""
    ti = context["ti"]
    # pulled, not an XComArg: when start_run never ran there is no record, and the verdict is still due
    run = ti.xcom_pull(task_ids="start_run")
    states = _task_states(ti.dag_id, ti.run_id, [task for task in context["dag"].task_ids if task != ti.task_id])
    if not run:
        print("start_run created no MLflow run: nothing to end")
        end = decide_end(states, {})
    else:
        end = _end_mlflow_run(spec, TrackingRun.of(run).run_id, ti, states)
    if end.status != "FINISHED":
        from operators.pipeline.tasks import stop_run

        stop_run([f"Pipeline run {ti.run_id} failed: {end.reason}"])
    return {"status": end.status, "reason": end.reason}


def _end_mlflow_run(spec: Any, run_id: str, ti: Any, states: Mapping[str, str | None]) -> RunEnd:
    from operators.clients import mlflow_tracking
    from operators.connections import MLFLOW_CONN

    with mlflow_tracking(MLFLOW_CONN):
        from mlflow import MlflowClient

        client = MlflowClient()
        jobs = _the_run_jobs(spec, ti.dag_id, ti.run_id) if client.get_run(run_id).info.status == "RUNNING" else {}
        end = decide_end(states, jobs)
        status = client.get_run(run_id).info.status  # a job that left the queue may have ended it
        if status != "RUNNING":
            print(f"MLflow run {run_id} was ended {status} by its jobs")
            return end
        client.set_tag(run_id, END_REASON_TAG, end.reason)
        client.set_terminated(run_id, status=end.status)
    print(f"MLflow run {run_id} ended {end.status}: {end.reason}")
    return end


def _the_run_jobs(spec: Any, dag_id: str, run_id: str) -> dict[str, JobStatus]:
    """The run's jobs on its site, once they left the queue; none when the site cannot be asked from here
    (the run still ends, with the reason Airflow's task states give)."""
    from operators.slurm.hooks import SlurmHook

    try:
        transport = SlurmHook(spec.connection).get_transport()
        jobs = wait_for_jobs_to_leave_queue(lambda: transport.jobs().values(), dag_id, run_id)
        for job in jobs.values():  # a job cancelled before it started never read (and removed) its credentials
            if job.finished and job.workdir:
                transport.remove(f"{job.workdir}/{JOB_ENV_FILE}")
        return jobs
    except Exception as error:  # the verdict is due whatever the site answers
        kind = "" if isinstance(error, SlurmError) else f"{type(error).__name__}: "
        print(f"Slurm jobs of this run not known ({kind}{error}); the run ends on Airflow's task states")
        return {}


def _task_states(dag_id: str, run_id: str, task_ids: list[str]) -> dict[str, str | None]:
    from operators.slurm.triggers import airflow_task_states

    return airflow_task_states(dag_id, [run_id], task_ids).get(run_id, {})
