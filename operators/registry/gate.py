"""The promotion gate: thresholds on the held-out metrics, then the comparison with the champion.

Pure functions on metric dicts, so the decision is testable and its reasons are recorded verbatim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    primary_metric: str
    challenger: float | None
    champion: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(challenger: dict[str, float], champion: dict[str, float] | None, thresholds: dict[str, float],
           primary_metric: str, min_improvement: float) -> GateDecision:
    """Promote only when every threshold holds and the primary metric beats the champion's
    (evaluated on the same split in the same run) by at least ``min_improvement``."""
    reasons, passed = [], True
    for metric, bound in sorted(thresholds.items()):
        value = challenger.get(metric)
        if value is None:
            reasons.append(f"{metric} missing from the evaluation: required >= {bound}")
            passed = False
        elif value < bound:
            reasons.append(f"{metric} {value:.4f} below threshold {bound}")
            passed = False
        else:
            reasons.append(f"{metric} {value:.4f} meets threshold {bound}")
    mine = challenger.get(primary_metric)
    theirs = (champion or {}).get(primary_metric)
    if champion is None:
        reasons.append("no champion yet: the first version that meets the thresholds becomes champion")
    elif mine is None or theirs is None:
        reasons.append(f"{primary_metric} missing for challenger or champion: cannot compare")
        passed = False
    elif mine - theirs < min_improvement:
        reasons.append(f"{primary_metric} {mine:.4f} vs champion {theirs:.4f}: improvement "
                       f"{mine - theirs:+.4f} below the required {min_improvement:+.4f}")
        passed = False
    else:
        reasons.append(f"{primary_metric} {mine:.4f} vs champion {theirs:.4f}: improvement "
                       f"{mine - theirs:+.4f} meets the required {min_improvement:+.4f}")
    return GateDecision(passed, reasons, primary_metric, mine, theirs)
