"""Which Slurm jobs no Airflow task wants any more: the safety net behind ``on_kill``.

Airflow cancels a deferred task's job through the trigger's ``on_kill``, but only while a triggerer
runs that trigger. A task marked failed (or its run cancelled) after it deferred and before a
triggerer picked the trigger up leaves its job running with nobody to stop it. The reconciler
closes that gap: every job carries its task's identity as comment (``airflow:dag/run/task/map``),
so a job whose task has ended, per Airflow's own record, is an orphan and gets cancelled.

Only an explicit end counts. A task that is running, deferred, queued, up for retry or unknown to
Airflow (a run not created yet) keeps its job: a retry adopts it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from operators.slurm.model import JobStatus

IDENTITY_PREFIX = "airflow:"
ENDED_TASK_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

# (dag_id, run_ids, task_ids) -> {run_id: {task key: state}}; task key is task_id, or task_id_mapindex
TaskStates = Callable[[str, list[str], list[str]], dict[str, dict[str, str | None]]]


@dataclass(frozen=True)
class TaskIdentity:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int

    @classmethod
    def parse(cls, comment: str) -> TaskIdentity | None:
        """The identity ``SlurmJobOperator.task_identity`` wrote; None for anybody else's job.
        Dag and task ids cannot hold ``/``, a run id may: it is what lies between them."""
        if not comment.startswith(IDENTITY_PREFIX):
            return None
        dag_id, _, rest = comment.removeprefix(IDENTITY_PREFIX).partition("/")
        parts = rest.rsplit("/", 2)
        if len(parts) != 3 or not dag_id or not parts[0]:
            return None
        run_id, task_id, map_index = parts
        try:
            return cls(dag_id, run_id, task_id, int(map_index))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{IDENTITY_PREFIX}{self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}"

    @property
    def state_key(self) -> str:
        """How Airflow's task-states answer names this task instance."""
        return self.task_id if self.map_index < 0 else f"{self.task_id}_{self.map_index}"


def orphaned_jobs(jobs: Iterable[JobStatus], task_states: TaskStates) -> list[tuple[JobStatus, str]]:
    """Active jobs whose Airflow task has ended, with that task's state; one lookup per DAG."""
    by_dag: dict[str, list[tuple[JobStatus, TaskIdentity]]] = defaultdict(list)
    for job in jobs:
        identity = TaskIdentity.parse(job.comment)
        if identity is not None and not job.ended(requeue=True):  # a REQUEUED job comes back: still active
            by_dag[identity.dag_id].append((job, identity))
    orphans = []
    for dag_id, entries in by_dag.items():
        states = task_states(dag_id, sorted({identity.run_id for _, identity in entries}),
                             sorted({identity.task_id for _, identity in entries}))
        for job, identity in entries:
            state = states.get(identity.run_id, {}).get(identity.state_key)
            if state in ENDED_TASK_STATES:
                orphans.append((job, state))
    return orphans
