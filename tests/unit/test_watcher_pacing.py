"""How the per-cluster poller paces itself: slower when the controller is slow, and never over budget."""

from __future__ import annotations

import time

from operators.slurm.watcher import ClusterWatcher, PollSettings


def watcher(**settings) -> ClusterWatcher:
    return ClusterWatcher(lambda: None, PollSettings(**settings))


def test_interval_follows_a_slow_controller():
    pacing = watcher(interval_s=2.0, max_interval_s=60.0)
    assert pacing._next_interval(0.05) == 2.0
    assert pacing._next_interval(0.8) == 8.0  # ten times the answer time
    assert pacing._next_interval(30.0) == 60.0  # capped


def test_budget_caps_calls_per_minute():
    pacing = watcher(interval_s=1.0, calls_per_minute=10)
    now = time.monotonic()
    pacing.stats.recent_calls.extend(now - 5 + i * 0.5 for i in range(10))  # 10 calls in the last 5 s
    assert pacing._next_interval(0.01) > 50  # wait until the oldest of them is a minute old


def test_under_budget_keeps_the_base_interval():
    pacing = watcher(interval_s=1.0, calls_per_minute=10)
    pacing.stats.recent_calls.extend([time.monotonic() - 1] * 5)
    assert pacing._next_interval(0.01) == 1.0
