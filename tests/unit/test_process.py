"""The supervisor stops whole process groups and never trusts a recycled pid."""

from __future__ import annotations

import os
import time

from stack.process import Supervised, log_tail, processes_in_group


def supervised(tmp_path) -> Supervised:
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "logs").mkdir(exist_ok=True)
    return Supervised("sleeper", tmp_path / "run", tmp_path / "logs")


def test_stop_ends_the_service_and_its_children(tmp_path):
    service = supervised(tmp_path)
    pid = service.start(["sh", "-c", "echo started; sleep 300 & sleep 300 & wait"], dict(os.environ))
    deadline = time.monotonic() + 5
    while len(processes_in_group(pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.pid() == pid
    assert len(processes_in_group(pid)) == 3
    assert service.stop(grace_s=2) is True
    assert processes_in_group(pid) == []
    assert service.pid() is None
    assert not service.pid_file.exists()
    assert "started" in log_tail(service.log_file)


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    service = supervised(tmp_path)
    pid = service.start(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"], dict(os.environ))
    time.sleep(0.3)
    began = time.monotonic()
    service.stop(grace_s=0.5)
    assert processes_in_group(pid) == []
    assert time.monotonic() - began < 5


def test_a_recycled_pid_is_not_mistaken_for_the_service(tmp_path):
    service = supervised(tmp_path)
    service.pid_file.write_text(f"{os.getpid()} 1\n")  # our pid, but another start time
    assert service.pid() is None
    assert service.stop() is False  # and it does not signal us


def test_exited_service_is_reported_as_dead(tmp_path):
    service = supervised(tmp_path)
    service.start(["sh", "-c", "echo failing; exit 4"], dict(os.environ))
    deadline = time.monotonic() + 5
    while service.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.exited_early()
    assert "failing" in log_tail(service.log_file)
