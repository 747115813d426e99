"""Transient Slurm errors ("Socket timed out", a controller restart, a dropped SSH link) are retried
with growing pauses until a deadline; a task fails only when the controller stays unreachable past it,
and says so.

One retry state per cluster: while the controller is failing, callers wait instead of adding load to a
controller that is already struggling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from operators.slurm.model import ControllerUnreachable, SlurmUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RetryWithDeadline:
    """Doubling pauses from ``first_pause_s`` to ``max_pause_s``; ``ControllerUnreachable`` once the
    controller has been failing for longer than ``unreachable_limit_s``."""

    unreachable_limit_s: float = 600.0
    first_pause_s: float = 1.0
    max_pause_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failing_since: float | None = field(default=None, init=False)
    _pause_s: float = field(default=0.0, init=False)

    @property
    def failing(self) -> bool:
        """The last call went unanswered: the next one waits first."""
        return self._failing_since is not None

    @property
    def down_s(self) -> float:
        """Seconds since the controller last answered well (0 while it answers)."""
        return 0.0 if self._failing_since is None else self.clock() - self._failing_since

    def unreachable(self, error: Exception, limit_s: float) -> ControllerUnreachable:
        return ControllerUnreachable(
            f"no answer from the Slurm controller for {self.down_s:.0f} s (limit {limit_s:.0f} s); "
            f"last error: {error}")

    def success(self) -> None:
        if self._failing_since is not None:
            log.info("Slurm controller answers again after %.0f s", self.clock() - self._failing_since)
        self._failing_since, self._pause_s = None, 0.0

    def failure(self, error: Exception) -> float:
        """The pause before the next try; raises ``ControllerUnreachable`` once the limit has passed."""
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since > self.unreachable_limit_s:
            raise self.unreachable(error, self.unreachable_limit_s)
        self._pause_s = min(max(self._pause_s * 2, self.first_pause_s), self.max_pause_s)
        log.warning("Slurm controller did not answer (%s); retrying in %.0f s", error, self._pause_s)
        return self._pause_s

    def call(self, function: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        """Run ``function`` until it answers, pausing on ``SlurmUnavailable`` (blocking: not for the triggerer)."""
        while True:
            try:
                result = function()
            except SlurmUnavailable as error:
                sleep(self.failure(error))
                continue
            self.success()
            return result
