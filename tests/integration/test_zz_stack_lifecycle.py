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
