"""The learned prep-time model as operators see it: every kitchen x SKU a kitchen offers (it
has the SKU's station), its p50/p90, where the estimate comes from, how many completions it is
learned from, and how well it has predicted so far."""

from __future__ import annotations

from typing import Any

from control_plane.planning.prep_times import PredictionError, PrepTimeModel
from control_plane.queries import Reader


def _error_view(error: PredictionError) -> dict[str, Any]:
    return {
        "count": error.count,
        "mean_abs_error_s": round(error.mean_abs_error_s, 3),
        "bias_s": round(error.bias_s, 3),
        "p90_coverage": round(error.p90_coverage, 4),
    }


def prep_times_view(
    reader: Reader,
    model: PrepTimeModel,
    *,
    kitchen_id: str | None = None,
    sku_id: str | None = None,
) -> dict[str, Any]:
    """Estimates per kitchen x SKU (filtered), and the error over every series."""
    offered: dict[str, set[str]] = {}
    for row in reader.stations():
        offered.setdefault(str(row["kitchen_id"]), set()).add(str(row["id"]))
    series = []
    for sku in reader.skus():
        if sku_id is not None and sku["id"] != sku_id:
            continue
        for kitchen in sorted(offered):
            if kitchen_id is not None and kitchen != kitchen_id:
                continue
            if sku["station_id"] not in offered[kitchen]:
                continue
            estimate = model.estimate(
                kitchen, str(sku["id"]), nominal_s=float(sku["total_duration_s"])
            )
            learned = model.by_kitchen_sku.get((kitchen, str(sku["id"])))
            series.append(
                {
                    "kitchen_id": kitchen,
                    "sku_id": sku["id"],
                    "p50_s": round(estimate.p50_s, 3),
                    "p90_s": round(estimate.p90_s, 3),
                    "source": estimate.source,
                    "samples": estimate.samples,
                    "completions": 0 if learned is None else len(learned.completions),
                    "outliers": 0 if learned is None else learned.outliers,
                    "nominal_s": float(sku["total_duration_s"]),
                    "error": _error_view(model.error_of(kitchen, str(sku["id"]))),
                }
            )
    series.sort(key=lambda s: (s["kitchen_id"], s["sku_id"]))
    return {"series": series, "error": _error_view(model.total_error())}
