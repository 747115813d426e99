"""A Slurm task is never resumed within the window of Airflow 3.3's defer/resume race (see RESUME_AFTER_S)."""

from __future__ import annotations

from operators.deferral import RESUME_AFTER_S, resume_hold_s
from operators.slurm.triggers import SlurmJobTrigger


def test_a_job_ending_right_after_the_deferral_is_held_until_the_window_has_passed() -> None:
    assert resume_hold_s(1000.0, 1003.0) == RESUME_AFTER_S - 3.0
    assert resume_hold_s(1000.0, 1000.0 + RESUME_AFTER_S + 5) == 0.0  # a longer job: no delay at all
    assert resume_hold_s(None, 1003.0) == 0.0  # a trigger from before the field existed


def test_the_deferral_time_survives_serialization() -> None:
    trigger = SlurmJobTrigger("factory_slurm_local", 42, deferred_at=1234.5)
    path, kwargs = trigger.serialize()
    assert path == "operators.slurm.triggers.SlurmJobTrigger" and kwargs["deferred_at"] == 1234.5
    assert SlurmJobTrigger(**kwargs).deferred_at == 1234.5
