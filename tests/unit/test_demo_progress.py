"""``factory demo`` says what it is doing: each task's state as it changes, then each task's duration."""

from __future__ import annotations

from stack.demo import duration_table, state_changes


def test_each_state_change_is_one_line_and_nothing_is_repeated():
    seen: dict = {}
    assert state_changes(seen, {"pin_dataset": "running", "train": None}, 1.04) == [
        "  [   1.0 s] pin_dataset                running"]
    assert state_changes(seen, {"pin_dataset": "running", "train": None}, 2.0) == []
    assert state_changes(seen, {"pin_dataset": "success", "train": "deferred"}, 12.5) == [
        "  [  12.5 s] pin_dataset                success", "  [  12.5 s] train                      deferred"]


def test_the_table_lists_tasks_in_the_order_they_started_with_their_seconds():
    instances = [{"task_id": "train", "state": "success", "start_date": "2026-12-06T02:00:05Z", "duration": 31.25},
                 {"task_id": "pin_dataset", "state": "success", "start_date": "2026-12-06T02:00:00Z", "duration": 0.8},
                 {"task_id": "register", "state": "upstream_failed", "start_date": None, "duration": None}]
    assert duration_table(instances) == [
        "  task                       state            seconds",
        "  pin_dataset                success              0.8",
        "  train                      success             31.2",
        "  register                   upstream_failed  -"]
