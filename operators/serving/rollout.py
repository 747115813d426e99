"""Roll a model version out next to the serving one, and back.

Rollout: stage (load) → ready → smoke → latency → default. Until the last step the serving version
answers every unversioned request; if any step fails the new version is unloaded again and the error
says which step and why. Retiring the previous version is a separate step, after a grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operators.errors import ServingError
from operators.serving.checks import CheckFailed, measure_latency
from operators.serving.http import InferenceError
from operators.serving.targets import ServingTarget
from operators.spec import Latency, Smoke

STEPS = ("load", "ready", "smoke", "latency", "default")


@dataclass
class RolloutReport:
    model: str
    version: str
    previous_version: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return round(sum(self.seconds.values()), 3)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "previous_version": self.previous_version,
                "seconds": self.seconds, "total_s": self.total_s, "smoke": self.smoke, "latency": self.latency}


class RolloutFailed(ServingError):
    """A step failed; the new version was unloaded and the previous default keeps serving."""

    def __init__(self, step: str, reason: str, report: RolloutReport, cleanup: str) -> None:
        self.step, self.reason, self.report = step, reason, report
        serving = f"version {report.previous_version} keeps serving" if report.previous_version \
            else "no version was serving before"
        super().__init__(f"{report.model} version {report.version} failed at {step}: {reason}; {cleanup}; {serving}")


def wait_until_ready(target: ServingTarget, model: str, version: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not target.ready(model, version):
        if time.monotonic() > deadline:
            raise InferenceError(f"{model} version {version} not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


def roll_out(target: ServingTarget, model: str, version: str, model_dir: Path | None, smoke: Smoke,
             latency: Latency, ready_timeout_s: float = 120.0,
             say: Callable[[str], None] = print) -> RolloutReport:
    report = RolloutReport(model=model, version=version, previous_version=target.default_version(model))
    step = STEPS[0]

    def timed(name: str, action: Callable[[], Any]) -> Any:
        nonlocal step
        step, started = name, time.perf_counter()
        result = action()
        report.seconds[name] = round(time.perf_counter() - started, 3)
        return result

    try:
        say(timed("load", lambda: target.stage(model, version, model_dir)))
        timed("ready", lambda: wait_until_ready(target, model, version, ready_timeout_s))
        report.smoke = timed("smoke", lambda: target.smoke(model, version, smoke))
        say(f"smoke test passed: {report.smoke}")
        measured = timed("latency", lambda: measure_latency(target.probe(model, version), latency.requests,
                                                            latency.p99_ms))
        report.latency = measured.as_dict()
        if not measured.passed:
            raise CheckFailed(f"p99 latency {measured.p99_ms:.1f} ms over {measured.requests} requests is above "
                              f"serving.latency.p99_ms {latency.p99_ms}")
        say(f"latency passed: {report.latency}")
        say(timed("default", lambda: target.make_default(model, version)))
    except (InferenceError, CheckFailed, OSError, ValueError) as error:
        raise RolloutFailed(step, str(error), report, discard(target, model, version)) from None
    return report


def discard(target: ServingTarget, model: str, version: str) -> str:
    """Unload a version that failed its rollout; what happened, for the error message."""
    try:
        return target.unload(model, version)
    except (InferenceError, OSError) as error:
        return f"unloading it failed too: {error}"


def switch_back(target: ServingTarget, model: str, to_version: str, model_dir: Path | None, smoke: Smoke,
                ready_timeout_s: float = 120.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Make ``to_version`` the default again: loaded anew from ``model_dir`` if it was retired already,
    smoke-tested, then the default. The version it replaces stays loaded; the caller retires it."""
    started = time.perf_counter()
    current = target.default_version(model)
    if not target.ready(model, to_version):
        say(target.stage(model, to_version, model_dir))
        wait_until_ready(target, model, to_version, ready_timeout_s)
    evidence = target.smoke(model, to_version, smoke)
    say(f"smoke test of version {to_version} passed: {evidence}")
    say(target.make_default(model, to_version))
    return {"model": model, "version": to_version, "replaced": current,
            "seconds": round(time.perf_counter() - started, 3), "smoke": evidence}
