"""PNG charts of a scenario run (matplotlib, Agg backend: no display needed).

* queue depth: open orders (accepted, planned, in prep) over the run, per kitchen and in all;
* on-time ratio: the share of orders readied so far that were on time, over the run;
* temperatures: holding equipment and probes against their legal limit.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from simulators.invariants import TemperatureSample
from simulators.scenarios import is_late


def queue_depth_chart(samples: list[tuple[float, dict[str, int]]], path: Path, title: str) -> Path:
    """``samples``: ``(seconds into the run, {kitchen or "all": open orders})``."""
    fig, ax = plt.subplots(figsize=(8, 4))
    series = sorted({k for _, row in samples for k in row})
    for name in series:
        ax.plot([t for t, _ in samples], [row.get(name, 0) for _, row in samples], label=name)
    ax.set(xlabel="run time (s)", ylabel="open orders", title=f"{title}: queue depth")
    if series:
        ax.legend(loc="upper left")
    return _save(fig, path)


def on_time_chart(orders: list[dict[str, Any]], started_at: float, path: Path, title: str) -> Path:
    """Cumulative on-time ratio of the orders readied so far, by their ready time."""
    readied = sorted(
        (datetime.fromisoformat(o["ready_at"]).timestamp() - started_at, not is_late(o))
        for o in orders
        if o.get("ready_at")
    )
    times, ratios, on_time = [], [], 0
    for n, (t, ok) in enumerate(readied, start=1):
        on_time += ok
        times.append(t)
        ratios.append(on_time / n)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.step(times, ratios, where="post")
    ax.set(
        xlabel="run time (s)",
        ylabel="on-time ratio",
        ylim=(0, 1.05),
        title=f"{title}: on-time ratio ({len(readied)} orders ready)",
    )
    return _save(fig, path)


def temperature_chart(
    samples: list[TemperatureSample],
    started_at: float,
    limits: dict[str, float],
    path: Path,
    title: str,
) -> Path:
    """Readings of the devices named in ``limits`` (device id -> legal limit, °C)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    by_series: dict[str, list[TemperatureSample]] = {}
    for sample in samples:
        # Holding equipment's main reading (air_temp, cabinet_temp), not its other metrics.
        if sample.device_id in limits and sample.metric.endswith("_temp"):
            by_series.setdefault(f"{sample.kitchen_id}/{sample.device_id}", []).append(sample)
    for name, points in sorted(by_series.items()):
        ax.plot([p.at - started_at for p in points], [p.value for p in points], label=name)
    for device_id, limit in sorted(limits.items()):
        ax.axhline(limit, linestyle="--", color="red", label=f"{device_id} limit {limit:g} °C")
    ax.set(xlabel="run time (s)", ylabel="°C", title=f"{title}: temperatures against limits")
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
