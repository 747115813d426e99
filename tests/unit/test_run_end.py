"""How ``end_run`` ends an MLflow run the jobs left RUNNING, and how long it waits for the queue."""

from __future__ import annotations

from operators.pipeline.run_end import RunEnd, decide_end, jobs_of_run, wait_for_jobs_to_leave_queue
from operators.slurm.model import JobStatus

DAG, RUN = "pipeline_x", "manual__2026-12-06T00:00:00+00:00"


def job(job_id: int, task: str, state: str, exit_code: int | None = None, run: str = RUN) -> JobStatus:
    return JobStatus(job_id, state, exit_code, comment=f"airflow:{DAG}/{run}/{task}/-1")


def test_a_cancelled_job_kills_the_run_naming_the_job_and_its_task():
    end = decide_end({"train": "failed", "evaluate": "skipped"}, {"train": job(7, "train", "CANCELLED")})
    assert (end.status, end.reason) == ("KILLED", "Slurm job 7 (train) CANCELLED")


def test_a_run_marked_failed_is_killed_naming_the_task_that_ran():
    """Airflow skips what had not run and leaves the running task failed: nothing is ``upstream_failed``."""
    end = decide_end({"start_run": "success", "train": "failed", "evaluate": "skipped", "gate": "skipped"}, {})
    assert (end.status, end.reason) == ("KILLED", "the Airflow run was marked failed while train ran")
    assert decide_end({"train": "failed", "evaluate": "upstream_failed"}, {}).status == "FAILED"


def test_a_failed_task_fails_the_run_with_its_job_state_and_exit_code():
    end = decide_end({"train": "failed", "evaluate": "upstream_failed", "gate": "upstream_failed"},
                     {"train": job(8, "train", "FAILED", 1)})
    assert (end.status, end.reason) == ("FAILED", "task train failed: Slurm job 8 ended FAILED with exit code 1")
    assert decide_end({"gate": "failed", "register": "upstream_failed"}, {}) == RunEnd("FAILED", "task gate failed")


def test_upstream_failures_alone_and_tasks_that_never_ran_are_named():
    assert decide_end({"register": "upstream_failed"}, {}).reason == "upstream failed: register"
    end = decide_end({"train": "success", "evaluate": "skipped", "gate": None}, {})
    assert (end.status, end.reason) == ("KILLED", "the Airflow run ended before gate ran")


def test_a_run_whose_tasks_all_succeeded_finishes():
    assert decide_end({"train": "success", "validate_data_on_cluster": "skipped"},
                      {"train": job(9, "train", "COMPLETED", 0)}).status == "FINISHED"


def test_only_this_runs_jobs_count_and_a_retry_replaces_the_first_try():
    jobs = [job(3, "train", "FAILED", 1), job(5, "train", "RUNNING"), job(4, "evaluate", "PENDING", run="other"),
            JobStatus(6, "RUNNING", comment="somebody else's job")]
    assert {task: status.job_id for task, status in jobs_of_run(jobs, DAG, RUN).items()} == {"train": 5}


def test_waiting_ends_when_the_jobs_left_the_queue_or_at_the_deadline():
    answers = iter([[job(5, "train", "RUNNING")], [job(5, "train", "CANCELLED")]])
    now = [0.0]
    jobs = wait_for_jobs_to_leave_queue(lambda: next(answers), DAG, RUN, clock=lambda: now[0],
                                        sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert jobs["train"].state == "CANCELLED" and now[0] == 5.0
    now[0] = 0.0
    jobs = wait_for_jobs_to_leave_queue(lambda: [job(5, "train", "RUNNING")], DAG, RUN, timeout_s=12,
                                        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert jobs["train"].state == "RUNNING" and now[0] == 15.0
