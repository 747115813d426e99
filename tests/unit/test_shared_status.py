"""Tasks that wait in their worker share one status call per interval on a host (operators/slurm/shared_status)."""

from __future__ import annotations

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
