"""Runs last (by name): ``stack down`` leaves no process behind, ``up`` restores the whole stack,
and a second ``up`` with everything running returns in seconds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from stack.manager import Stack
from stack.settings import HOST, PORTS

REPO = Path(__file__).resolve().parents[2]


def stack_command(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def test_down_leaves_nothing_and_up_restores_everything(stack_info):
    stack = Stack()
    down = stack_command("down")
    assert down.returncode == 0, down.stderr
    assert stack.leftovers() == []
    assert [name for name, port in PORTS.items() if listening(port)] == []
    assert {row["state"] for row in stack.status()} == {"stopped"}

    up = stack_command("up", "--json")
    assert up.returncode == 0, up.stderr
    started = json.loads(up.stdout)["services"]
    assert all(entry["started"] for entry in started.values())
    assert {row["state"] for row in stack.status()} == {"healthy"}

    began = time.monotonic()
    again = stack_command("up", "--json")
    assert again.returncode == 0, again.stderr
    assert not any(entry["started"] for entry in json.loads(again.stdout)["services"].values())
    assert time.monotonic() - began < 10


def test_a_port_held_by_a_process_the_stack_did_not_start_is_an_error_naming_it(stack_info):
    """The orphan case: an untracked slurmrestd kept its port, a new one could not bind, yet `up` said "up"."""
    stack = Stack()
    stack.supervised("slurmrestd").stop()
    service = stack.services["slurmrestd"]  # a real slurmrestd, healthy in every way but untracked
    orphan = subprocess.Popen(service.command, env=stack._env(service), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not listening(PORTS["slurmrestd"]):
            assert time.monotonic() < deadline, "the stand-in orphan did not listen"
            time.sleep(0.1)
        row = next(row for row in stack.status() if row["service"] == "slurmrestd")
        assert row["state"] == "foreign" and f"pid {orphan.pid} (" in row["problem"], row
        status = stack_command("status")
        assert f"port {PORTS['slurmrestd']} is held by pid {orphan.pid}" in status.stdout

        up = stack_command("up")
        assert up.returncode != 0, "up must not report a service whose port another process answers"
        assert f"slurmrestd: port {PORTS['slurmrestd']} is held by pid {orphan.pid} (" in up.stderr + up.stdout
        assert "/usr/sbin/slurmrestd -a rest_auth/jwt" in up.stderr + up.stdout
        assert "slurmrestd  up in" not in up.stdout
    finally:
        orphan.kill()
        orphan.wait()
    up = stack_command("up")
    assert up.returncode == 0, up.stderr
    assert next(row for row in stack.status() if row["service"] == "slurmrestd")["state"] == "healthy"
