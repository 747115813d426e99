"""Bringing services up, shared by the stack (``stack.manager``) and the second Slurm cluster
(``stack.slurm24``): waiting for a started service's health, and what ``up`` reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from stack.ports import describe_foreign, foreign_holders
from stack.process import StackError, Supervised, family, log_tail
from stack.services import Service


def wait_healthy(service: Service, process: Supervised | None, log_file: Path, label: str = "") -> None:
    """Until the service's health check passes and its ports are held by the process we started; its process
    dying or the start timeout fails with its log (and whoever holds its ports instead)."""
    name = f"{label}{service.name}"
    deadline = time.monotonic() + service.start_timeout_s
    reason = "not checked"
    while time.monotonic() < deadline:
        pid = process.pid() if process is not None else None
        if process is not None and pid is None:
            foreign = foreign_holders(service.ports, set())
            held = f"\n{describe_foreign(name, foreign)}" if foreign else ""
            raise StackError(f"{name} exited while starting (log {log_file}):{held}\n{log_tail(log_file)}")
        reason = service.health()
        if reason is None and pid is not None and service.ports:
            foreign = foreign_holders(service.ports, family(pid))
            reason = describe_foreign(name, foreign) if foreign else None
        if reason is None:
            return
        time.sleep(0.25)
    raise StackError(f"{name} not healthy after {service.start_timeout_s:.0f} s: {reason}\n"
                     f"--- last lines of {log_file} ---\n{log_tail(log_file)}")


@dataclass
class Outcome:
    service: str
    seconds: float
    started: bool  # False when it was already running and healthy


def report_up(outcomes: list[Outcome], total_s: float, as_json: bool, label: str, suffix: str = "") -> None:
    """What ``up`` prints, for the stack and the second Slurm cluster alike."""
    if as_json:
        print(json.dumps({"total_s": round(total_s, 2), "services": {
            o.service: {"seconds": round(o.seconds, 2), "started": o.started} for o in outcomes}}))
    else:
        started = sum(o.started for o in outcomes)
        print(f"{label} up in {total_s:.1f} s ({started} started, {len(outcomes) - started} already running){suffix}")
