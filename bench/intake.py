"""``intake``: accepted orders/s and p99 latency of ``POST /v1/orders`` with every feature on
(auth, idempotency, feasibility, planning, audit, durable commit: ``synchronous=FULL`` with group
commit, no answer before its batch is fsync'd), against the same server's empty endpoint
(``GET /healthz``) measured in the same run with the same client.

Closed loop: at concurrency ``c`` the mean latency is ``c / throughput`` (Little's law), so a
p99 within 30 ms at c64 needs more than 2,100 answers/s, which the empty endpoint alone does not
reach on a 2-core box shared with the load generator; the baseline's own p99 is reported beside
it for that reason.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.loadgen import build_request, closed_loop
from bench.results import Result
from simulators.services import ControlPlane

BENCHMARK = "intake"

SKU = {
    "id": "bench-bowl",
    "name": "Bench bowl",
    "station_id": "hot-line",
    "steps": [
        {
            "name": "cook",
            "equipment_kind": "oven",
            "action": "cook",
            "setpoint_c": 180,
            "duration_s": 60,
            "manual": False,
            "min_core_temp_c": 74,
        }
    ],
    "freshness_window_min": 60,
    "priority": "normal",
    "hold": "hot",
}


def _setup(cp: ControlPlane) -> None:
    with cp.client() as http:
        # Enough capacity that the planner accepts every order of the run: the benchmark
        # measures intake, not rejection.
        for n in range(8):
            http.post(
                "/v1/kitchens",
                json={
                    "id": f"bench-k{n}",
                    "name": f"Bench kitchen {n}",
                    "timezone": "UTC",
                    "stations": [{"id": "hot-line", "name": "Hot line", "slots": 64}],
                },
            ).raise_for_status()
        http.post("/v1/skus", json=SKU).raise_for_status()


def run(*, seconds: float = 8.0, concurrency: tuple[int, ...] = (1, 16, 64)) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="brigade-bench-intake-") as tmp:
        cp = ControlPlane(Path(tmp)).start()
        try:
            _setup(cp)
            host = f"{cp.host}:{cp.port}"
            auth = {"Authorization": f"Bearer {cp.admin_token}"}
            promised = (datetime.now(UTC) + timedelta(hours=20)).isoformat()
            body = json.dumps(
                {
                    "items": [{"sku_id": SKU["id"], "quantity": 1}],
                    "promised_by": promised,
                    "destination": "store-1",
                    "transport_min": 10,
                    "priority": "normal",
                }
            ).encode()
            run_id = uuid.uuid4().hex[:8]

            def orders(c: int) -> Callable[[int], bytes]:
                """The n-th order of the run at concurrency ``c``: a key of its own, so every
                request is a new order (a key reused across levels would be a cheap replay)."""

                def order(n: int) -> bytes:
                    headers = {
                        **auth,
                        "Content-Type": "application/json",
                        "Idempotency-Key": f"bench-{run_id}-c{c}-{n}",
                    }
                    return build_request("POST", "/v1/orders", host, headers, body)

                return order

            empty = build_request("GET", "/healthz", host, {})
            for c in concurrency:
                base = closed_loop(
                    cp.host,
                    cp.port,
                    lambda _n: empty,
                    concurrency=c,
                    seconds=seconds / 2,
                    accept={200},
                )
                load = closed_loop(
                    cp.host, cp.port, orders(c), concurrency=c, seconds=seconds, accept={201}
                )
                params = {
                    "concurrency": c,
                    "seconds": seconds,
                    "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
                    "transport_errors": load.errors,
                }
                results.append(
                    Result(
                        "intake",
                        f"accepted_orders_per_s@c{c}",
                        round(load.rate({201}), 1),
                        "orders/s",
                        "empty endpoint req/s",
                        round(base.rate({200}), 1),
                        params,
                        goal="ratio >= 0.5" if c == 64 else None,
                    )
                )
                results.append(
                    Result(
                        "intake",
                        f"p99_latency@c{c}",
                        round(load.quantile(0.99) * 1000, 2),
                        "ms",
                        "empty endpoint p99 ms",
                        round(base.quantile(0.99) * 1000, 2),
                        params,
                        goal="<= 30 ms" if c == 64 else None,
                    )
                )
        finally:
            cp.stop()
    return results
