"""The Airflow 3.3 defer/resume race, worked around in one place (Slurm triggers, the serving grace period).

The scheduler may read a worker's late "success" for a task's defer exit after the trigger has already put
the task back in the queue, and then fails it ("finished with state success, but the task instance's state
attribute is queued"); measured up to ~5.5 s after the deferral. So a task is never resumed within
``RESUME_AFTER_S`` of deferring: a trigger holds its event until then, and a wait shorter than that is slept
by the task instead of deferred.
"""

from __future__ import annotations

RESUME_AFTER_S = 10.0


def resume_hold_s(deferred_at: float | None, now: float) -> float:
    """How long a trigger keeps a job's final event, so the task is never resumed inside that window."""
    return 0.0 if deferred_at is None else max(0.0, deferred_at + RESUME_AFTER_S - now)
