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


def test_an_outage_is_told_to_every_watch_when_noticed_then_every_half_minute_and_its_end_too():
    from operators.slurm.model import SlurmUnavailable
    from operators.slurm.watcher import Watch

    pacing = watcher(interval_s=2.0, unreachable_limit_s=900)
    watches = [Watch(41), Watch(42, unreachable_limit_s=120)]
    for watch in watches:
        pacing._watches.setdefault(watch.job_id, []).append(watch)
    error = SlurmUnavailable("ssh: connect to host 10.77.1.20 port 22: No route to host")
    from datetime import UTC, datetime, timedelta

    pacing._answered_at = datetime.now(UTC) - timedelta(seconds=50)  # the last good answer, before a hung call
    pacing.retry.failure(error)
    pacing._tell_outage(error)
    pacing._tell_outage(error)  # the next failed poll, seconds later: no second notice yet
    told = [watch.updates.get_nowait() for watch in watches]
    assert all(watch.updates.empty() for watch in watches)
    assert [update.kind for update in told] == ["outage", "outage"]
    assert "unreachable since 20" in told[0].message and "No route to host" in told[0].message
    assert "(no answer for 50 s)" in told[0].message
    assert "job 41, giving up after 900 s" in told[0].message and "job 42, giving up after 120 s" in told[1].message
    pacing._outage_told_at -= 31  # half a minute on: reminded
    pacing._tell_outage(error)
    assert [watch.updates.get_nowait().kind for watch in watches] == ["outage", "outage"]
    pacing._tell_reachable()
    pacing.retry.success()
    back = [watch.updates.get_nowait() for watch in watches]
    assert [update.kind for update in back] == ["reachable", "reachable"] and "answers again" in back[0].message
    pacing._tell_reachable()  # no outage: nothing to say
    assert all(watch.updates.empty() for watch in watches)


def watch_a_hanging_call(hang_s: float, notice_s: float):
    """A new watcher with one watch whose status call hangs ``hang_s``; the watch, told after ``notice_s``."""
    import asyncio

    from operators.slurm import watcher as module
    from operators.slurm.watcher import Watch

    pacing = watcher(interval_s=2.0)
    watch = Watch(7)
    pacing._watches[7] = [watch]

    async def hanging_poll() -> None:
        await asyncio.sleep(hang_s)

    pacing._poll_once = hanging_poll
    old, module.SILENCE_NOTICE_S = module.SILENCE_NOTICE_S, notice_s
    try:
        asyncio.run(pacing._poll_telling_silence())
    finally:
        module.SILENCE_NOTICE_S = old
    return pacing, watch


def test_a_status_call_that_hangs_is_told_as_an_outage_and_its_answer_as_the_end():
    pacing, watch = watch_a_hanging_call(0.3, notice_s=0.1)
    told = watch.updates.get_nowait()
    assert told.kind == "outage" and "no answer for over" in told.message
    pacing._tell_reachable()
    assert watch.updates.get_nowait().kind == "reachable"


def test_a_new_watcher_whose_first_call_hangs_dates_the_outage_from_that_call():
    from datetime import UTC, datetime

    asked = datetime.now(UTC)
    _, watch = watch_a_hanging_call(2.3, notice_s=2.1)
    told = watch.updates.get_nowait()
    since = datetime.fromisoformat(told.message.split("unreachable since ")[1].split(" ")[0])
    assert since.timestamp() < asked.timestamp() + 1, told.message  # when the call began, not when told (2.1 s on)
    assert "(no answer for 2 s)" in told.message


def test_a_watcher_idle_since_its_last_answer_dates_a_new_outage_from_its_first_unanswered_call():
    """Reused after a quiet spell (no jobs, no calls), its last answer is minutes old: not when the outage began."""
    from datetime import UTC, datetime, timedelta

    from operators.slurm.model import SlurmUnavailable
    from operators.slurm.watcher import Watch

    pacing = watcher(interval_s=2.0)
    watch = Watch(9)
    pacing._watches[9] = [watch]
    pacing._answered_at = datetime.now(UTC) - timedelta(seconds=532)
    pacing._asked_at = datetime.now(UTC) - timedelta(seconds=10)
    pacing._pause_s = 2.0
    pacing._tell_outage(SlurmUnavailable("a status call has had no answer for over 10 s"))
    assert "(no answer for 10 s)" in watch.updates.get_nowait().message
    pacing._outage_told_at = None  # while it polled every 2 s: the link was last known up at the last answer
    pacing._answered_at = datetime.now(UTC) - timedelta(seconds=12.2)
    pacing._tell_outage(SlurmUnavailable("a status call has had no answer for over 10 s"))
    assert "(no answer for 12 s)" in watch.updates.get_nowait().message
    pacing._outage_told_at = None  # the next call started late (a busy triggerer's loop): still polling
    pacing._answered_at = pacing._asked_at - timedelta(seconds=2.0 + 6.2)
    pacing._tell_outage(SlurmUnavailable("a status call has had no answer for over 10 s"))
    assert "(no answer for 18 s)" in watch.updates.get_nowait().message
