"""A steady request rate against a served model, counting every failed request: the rollout's load test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from operators.serving.checks import percentile


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    answered_by: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies_ms) or [0.0]
        return {"sent": self.sent, "failed": self.failed, "seconds": round(self.seconds, 2),
                "rate_per_s": round(self.sent / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(percentile(ordered, 0.5), 2), "p99_ms": round(percentile(ordered, 0.99), 2),
                "answered_by": self.answered_by, "first_errors": self.errors[:5]}


class SteadyLoad:
    """Sends ``request()`` ``rate_per_s`` times a second from a pool, so a slow answer does not lower the
    rate, until stopped. ``request`` returns a label of who answered (e.g. the model version) or raises."""

    def __init__(self, request: Callable[[], str | None], rate_per_s: float = 50.0, workers: int = 16) -> None:
        self.request, self.interval = request, 1.0 / rate_per_s
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
        self._thread = threading.Thread(target=self._pace, daemon=True)
        self._started = 0.0

    def __enter__(self) -> SteadyLoad:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self._pool.shutdown(wait=True)
            self.result.seconds = time.monotonic() - self._started
        return self.result

    def _pace(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._pool.submit(self._one)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _one(self) -> None:
        started = time.perf_counter()
        try:
            label = self.request()
        except Exception as error:  # every failure counts, whatever raised it
            with self._lock:
                self.result.sent += 1
                self.result.failed += 1
                self.result.errors.append(f"{type(error).__name__}: {error}"[:300])
            return
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            self.result.sent += 1
            self.result.latencies_ms.append(elapsed)
            key = str(label)
            self.result.answered_by[key] = self.result.answered_by.get(key, 0) + 1
