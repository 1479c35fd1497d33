"""The result format every benchmark writes, and the table it prints.

One result is ``{"benchmark", "metric", "value", "unit", "baseline", "baseline_value", "ratio",
"params", "machine"}``; the baseline is measured in the same run on the same machine, so the
ratio survives a noisy or slower machine.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
    }


@dataclass
class Result:
    """One measured figure against its same-run baseline."""

    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    goal: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0) or self.baseline_value is None:
            return None
        return round(self.value / self.baseline_value, 4)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["machine"] = machine()
        return data


def print_table(results: list[Result], out: Any = sys.stdout) -> None:
    """A fixed-width table of results."""
    header = (
        f"{'benchmark':<14}{'metric':<34}{'value':>12} {'unit':<10}"
        f"{'baseline':>14}{'ratio':>8}  goal"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in results:
        base = "" if r.baseline_value is None else f"{r.baseline_value:.2f}"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        print(
            f"{r.benchmark:<14}{r.metric:<34}{r.value:>12.2f} {r.unit:<10}{base:>14}{ratio:>8}"
            f"  {r.goal or ''}",
            file=out,
        )
