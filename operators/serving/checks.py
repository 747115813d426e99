"""What a new version must pass before it takes traffic: a smoke test with known inputs and a latency check."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from operators.errors import ServingError


class CheckFailed(ServingError):
    """A smoke or latency check failed; the message says what was expected and what came back."""


def v2_smoke_inputs(example: dict[str, Any], rows: list[list[float]] | None = None) -> list[dict[str, Any]]:
    """V2 inputs from the model's MLflow serving input example (``dataframe_split``), or from the spec's
    rows in the example's column order: one input per named column, which MLServer's pandas codec turns
    back into the DataFrame the model's signature wants."""
    split = example["dataframe_split"]
    columns = split.get("columns")
    if rows is not None and columns is not None and any(len(row) != len(columns) for row in rows):
        raise CheckFailed(f"serving.smoke.inputs rows must have {len(columns)} values "
                          f"(the model's columns: {', '.join(columns)})")
    data = rows if rows is not None else split["data"]
    if columns is None:
        return [{"name": "input-0", "shape": [len(data), len(data[0])], "datatype": "FP64",
                 "data": [float(value) for row in data for value in row]}]
    return [{"name": column, "shape": [len(data), 1], "datatype": "FP64",
             "data": [float(row[index]) for row in data]} for index, column in enumerate(columns)]


def v2_parameters(example: dict[str, Any]) -> dict[str, Any] | None:
    """Named columns travel as one input each and MLServer's pandas codec makes the DataFrame again;
    an unnamed matrix is one tensor, which the model takes as it is."""
    return {"content_type": "pd"} if example["dataframe_split"].get("columns") else None


def check_v2_outputs(answer: dict[str, Any], rows: int, allowed: Sequence[Any] | None,
                     value_range: Sequence[float] | None) -> list[Any]:
    """The first output's predictions: one per input row, numbers, within the spec's values or range."""
    outputs = answer.get("outputs")
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        raise CheckFailed(f"the answer has no outputs: {str(answer)[:200]}")
    data = outputs[0].get("data")
    if not isinstance(data, list) or len(data) != rows:
        raise CheckFailed(f"expected {rows} predictions (one per smoke input row), got "
                          f"{len(data) if isinstance(data, list) else type(data).__name__}")
    if allowed is not None:
        unexpected = [value for value in data if value not in allowed]
        if unexpected:
            raise CheckFailed(f"predictions {unexpected[:5]} are not among serving.smoke.allowed_outputs "
                              f"{list(allowed)}")
    if value_range is not None:
        low, high = value_range
        outside = [v for v in data if not isinstance(v, int | float) or not math.isfinite(v) or not low <= v <= high]
        if outside:
            raise CheckFailed(f"predictions {outside[:5]} are outside serving.smoke.output_range [{low}, {high}]")
    return data


@dataclass(frozen=True)
class LatencyReport:
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    limit_ms: float

    @property
    def passed(self) -> bool:
        return self.p99_ms <= self.limit_ms

    def as_dict(self) -> dict[str, float | int]:
        return {"requests": self.requests, "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2),
                "max_ms": round(self.max_ms, 2), "limit_ms": self.limit_ms}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the value at least ``fraction`` of the samples do not exceed."""
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def measure_latency(request: Callable[[], object], requests: int, limit_ms: float) -> LatencyReport:
    """``requests`` calls one after another (a warm-up call first, not counted)."""
    request()
    durations = []
    for _ in range(requests):
        started = time.perf_counter()
        request()
        durations.append((time.perf_counter() - started) * 1000)
    durations.sort()
    return LatencyReport(requests=requests, p50_ms=percentile(durations, 0.5), p99_ms=percentile(durations, 0.99),
                         max_ms=durations[-1], limit_ms=limit_ms)
