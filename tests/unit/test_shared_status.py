"""Tasks that wait in their worker share one status call per interval on a host (operators/slurm/shared_status)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import stat
import time
from pathlib import Path

from operators.slurm.model import JobStatus
from operators.slurm.shared_status import SharedStatusTransport


class CountingTransport:
    """Answers ``jobs`` like squeue would and counts the calls in a file (calls come from many processes)."""

    def __init__(self, counter: Path) -> None:
        self.counter = counter

    def jobs(self) -> dict[int, JobStatus]:
        with open(self.counter, "a") as out:
            out.write("x")
        time.sleep(0.05)  # a controller's answer takes a moment: the others wait on the lock meanwhile
        return {7: JobStatus(7, "RUNNING", comment="airflow:d/r/t/-1"), 8: JobStatus(8, "PENDING", reason="Priority")}

    def describe(self) -> str:
        return "counting"


def poll_for(folder: Path, counter: Path, seconds: float, interval_s: float) -> int:
    shared = SharedStatusTransport(CountingTransport(counter), "site_a", "hpcuser", interval_s, folder=folder)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses = shared.jobs()
        assert statuses[7].state == "RUNNING" and statuses[8].reason == "Priority"
        time.sleep(interval_s / 4)
    return shared.calls


def test_ten_waiting_processes_make_one_status_call_per_interval(tmp_path: Path):
    counter = tmp_path / "calls"
    counter.touch()
    with multiprocessing.get_context("fork").Pool(10) as pool:
        calls = pool.starmap(poll_for, [(tmp_path / "status", counter, 3.0, 0.5)] * 10)
    made = len(counter.read_text())
    assert made == sum(calls)
    assert 5 <= made <= 8, made  # 3 s at 0.5 s: about 6 calls in all, not 10 processes x 24 polls
    assert stat.S_IMODE(os.stat(tmp_path / "status").st_mode) == 0o700


def test_other_transport_calls_go_to_the_transport_and_another_cluster_has_its_own_answer(tmp_path: Path):
    counter = tmp_path / "calls"
    counter.touch()
    a = SharedStatusTransport(CountingTransport(counter), "site_a", "hpcuser", 60, folder=tmp_path)
    b = SharedStatusTransport(CountingTransport(counter), "site_b", "hpcuser", 60, folder=tmp_path)
    assert a.describe() == "counting"
    a.jobs(), a.jobs(), b.jobs()
    assert (a.calls, b.calls) == (1, 1)
    (tmp_path / "site_a-hpcuser.json").write_text("not json")  # a damaged copy: asked again, never trusted
    assert a.jobs()[7].state == "RUNNING" and a.calls == 2


class SlowAsyncTransport(CountingTransport):
    """The same answer through ``async_jobs``, as a triggerer's watcher asks, taking ``answer_s``."""

    def __init__(self, counter: Path, answer_s: float) -> None:
        super().__init__(counter)
        self.answer_s = answer_s

    def jobs(self) -> dict[int, JobStatus]:
        raise AssertionError("an event loop's call must not take a thread for the blocking jobs()")

    async def async_jobs(self) -> dict[int, JobStatus]:
        with open(self.counter, "a") as out:
            out.write("x")
        await asyncio.sleep(self.answer_s)
        return {7: JobStatus(7, "RUNNING", comment="airflow:d/r/t/-1")}


def triggerer_polls(folder: Path, counter: Path, seconds: float, interval_s: float) -> int:
    """A triggerer's loop: asks every interval through ``async_jobs``."""
    async def loop() -> int:
        shared = SharedStatusTransport(SlowAsyncTransport(counter, 0.05), "site_b", "hpcuser", interval_s,
                                       folder=folder)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert (await shared.async_jobs())[7].state == "RUNNING"
            await asyncio.sleep(interval_s / 4)
        return shared.calls

    return asyncio.run(loop())


def test_triggerers_on_one_host_make_one_status_call_per_interval_between_them(tmp_path: Path):
    counter = tmp_path / "calls"
    counter.touch()
    with multiprocessing.get_context("fork").Pool(4) as pool:  # two triggerers x two connections to one cluster
        calls = pool.starmap(triggerer_polls, [(tmp_path / "status", counter, 3.0, 0.5)] * 4)
    made = len(counter.read_text())
    assert made == sum(calls)
    assert 5 <= made <= 8, (made, calls)  # 3 s at 0.5 s: about 6 calls in all, not 4 x 6


def hold_the_call(folder: Path, counter: Path, answer_s: float) -> None:
    asyncio.run(SharedStatusTransport(SlowAsyncTransport(counter, answer_s), "site_b", "hpcuser", 60,
                                      folder=folder).async_jobs())


def test_an_event_loop_waiting_for_another_process_s_answer_is_never_blocked_and_takes_that_answer(tmp_path: Path):
    counter, folder = tmp_path / "calls", tmp_path / "status"
    counter.touch()
    holder = multiprocessing.get_context("fork").Process(target=hold_the_call, args=(folder, counter, 1.5))
    holder.start()
    deadline = time.monotonic() + 10
    while not counter.read_text():  # the other process holds the lock and waits for the controller
        assert time.monotonic() < deadline and holder.is_alive(), "the holder never asked the controller"
        time.sleep(0.01)

    async def waiter() -> tuple[dict[int, JobStatus], float, int]:
        gaps, last = [], time.monotonic()

        async def ticker() -> None:
            nonlocal last
            while True:
                await asyncio.sleep(0.02)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        ticking = asyncio.create_task(ticker())
        shared = SharedStatusTransport(SlowAsyncTransport(counter, 0.05), "site_b", "hpcuser", 60, folder=folder)
        answer = await shared.async_jobs()
        ticking.cancel()
        return answer, max(gaps), shared.calls

    answer, longest_gap_s, own_calls = asyncio.run(waiter())
    holder.join(10)
    assert answer[7].state == "RUNNING"
    assert own_calls == 0 and len(counter.read_text()) == 1  # the holder's answer served both
    assert longest_gap_s < 0.2, longest_gap_s  # Airflow's blocked-loop warning threshold
