"""Pure planning cores: they take ``now`` and plain data and return decisions, no I/O.

- :mod:`.world` — the plain data (kitchens, SKUs, orders, bookings; plans and rejections).
- :mod:`.prep_times` — learned p50/p90 prep times per kitchen x SKU, with prediction error.
- :mod:`.planner` — :func:`~.planner.plan_batch` (kitchen, slot, just-in-time start, batching,
  stock) and the thin-slice :func:`~.planner.plan_order` that intake calls today.
- :mod:`.replan` — re-planning that moves only tasks that cannot have started (SPEC 3).
- :mod:`.sla` — predicted ready/handover times, margins, miss alerts with lead time and cause.
- :mod:`.backpressure` — normal/throttle/shed/pause per kitchen and fleet, with hysteresis.
- :mod:`.admission` — adaptive (AIMD) concurrency limits per traffic class of the API.
- :mod:`.scheduler`, :mod:`.timeline` — the placement step and slot timelines they share.
"""
