"""Which jobs the reconciler cancels: only those whose Airflow task has explicitly ended."""

from __future__ import annotations

import pytest

from operators.slurm.model import JobStatus
from operators.slurm.reconciler import TaskIdentity, orphaned_jobs


@pytest.mark.parametrize("identity", [
    TaskIdentity("pipeline_breast_cancer", "manual__2026-11-22T10:00:00+00:00", "train", -1),
    TaskIdentity("d", "scheduled/with/slashes", "group.task", 7),
    TaskIdentity("d", "r", "t", 0),
])
def test_an_identity_survives_the_comment_round_trip(identity: TaskIdentity):
    assert TaskIdentity.parse(str(identity)) == identity


@pytest.mark.parametrize("comment", ["", "transport-test:rest:abc", "airflow:", "airflow:d/r/t/x", "airflow:d/t/0",
                                     "airflow:/r/t/-1"])
def test_other_comments_are_nobody_s_task(comment: str):
    assert TaskIdentity.parse(comment) is None


def job(job_id: int, identity: TaskIdentity | str, state: str = "RUNNING") -> JobStatus:
    return JobStatus(job_id, state, None, "", None, 0, str(identity), "/tmp")


def test_only_jobs_of_ended_tasks_are_orphans_with_one_lookup_per_dag():
    states = {"run1": {"ended": "failed", "marked": "success", "live": "deferred", "retrying": "up_for_retry",
                       "cleared": None, "mapped_2": "skipped", "mapped_3": "running"},
              "run2": {"ended": "upstream_failed"}}
    lookups: list[tuple[str, list[str], list[str]]] = []

    def task_states(dag_id: str, run_ids: list[str], task_ids: list[str]) -> dict:
        lookups.append((dag_id, run_ids, task_ids))
        return states if dag_id == "d" else {}

    jobs = [job(1, TaskIdentity("d", "run1", "ended", -1)), job(2, TaskIdentity("d", "run1", "marked", -1)),
            job(3, TaskIdentity("d", "run1", "live", -1)), job(4, TaskIdentity("d", "run1", "retrying", -1)),
            job(5, TaskIdentity("d", "run1", "cleared", -1)), job(6, TaskIdentity("d", "run1", "mapped", 2)),
            job(7, TaskIdentity("d", "run1", "mapped", 3)), job(8, TaskIdentity("d", "run2", "ended", -1)),
            job(9, TaskIdentity("d", "run-not-created-yet", "ended", -1)),
            job(10, TaskIdentity("other", "run1", "ended", -1)), job(11, "not ours"),
            job(12, TaskIdentity("d", "run1", "ended", -1), state="COMPLETED")]
    orphans = orphaned_jobs(jobs, task_states)
    assert [(status.job_id, state) for status, state in orphans] == [
        (1, "failed"), (2, "success"), (6, "skipped"), (8, "upstream_failed")]
    assert sorted(dag for dag, _, _ in lookups) == ["d", "other"]
    assert lookups[0][1] == ["run-not-created-yet", "run1", "run2"]
