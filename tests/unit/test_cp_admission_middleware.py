"""Overload protection of the API: per-class concurrency limits answered 503 + Retry-After."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from control_plane.admission_middleware import (
    TRAFFIC_CLASSES,
    AdmissionMiddleware,
    budgets_from,
    traffic_class,
)
from control_plane.app import create_app
from control_plane.config import Settings
from control_plane.metrics import Metrics
from control_plane.planning.admission import ClassBudget
from control_plane.store import Store

DEADLINE_S = 5.0
OVERLOADED = "https://brigade.example/problems/overloaded"


HOLD = {"x-test-hold": "1"}


class Kitchen:
    """A stand-in app: requests with ``X-Test-Hold`` wait until released, ``/boom`` raises."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.go_on = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["path"].endswith("/boom"):
            raise RuntimeError("boom")
        if (b"x-test-hold", b"1") in scope["headers"]:
            self.entered.set()
            await self.go_on.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


Scenario = Callable[[httpx.AsyncClient, Kitchen, AdmissionMiddleware], Awaitable[None]]


def run(scenario: Scenario, *, limit: int = 1) -> Metrics:
    """Run ``scenario`` against the middleware over a :class:`Kitchen`, every class at ``limit``."""
    metrics = Metrics()

    async def main() -> None:
        kitchen = Kitchen()
        budgets = {name: ClassBudget(initial=limit, min_limit=1) for name in TRAFFIC_CLASSES}
        middleware = AdmissionMiddleware(kitchen, metrics=metrics, budgets=budgets)
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            await scenario(client, kitchen, middleware)

    asyncio.run(main())
    return metrics


async def hold(
    client: httpx.AsyncClient, kitchen: Kitchen, method: str, path: str
) -> asyncio.Task[httpx.Response]:
    """Start a request that stays in progress until ``kitchen.go_on`` is set."""
    held = asyncio.create_task(client.request(method, path, headers=HOLD))
    await asyncio.wait_for(kitchen.entered.wait(), DEADLINE_S)
    return held


def rejected(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(
        "brigade_admission_rejected_total", {"traffic_class": name}
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/orders", "intake"),
        ("POST", "/v1/orders/", "intake"),
        ("POST", "/v1/agents/sync", "sync"),
        ("POST", "/v1/agents/enroll", "sync"),
        ("GET", "/v1/orders", "read"),
        ("GET", "/v1/agents", "read"),
        ("HEAD", "/v1/kitchens", "read"),
        ("POST", "/v1/orders/o-1/cancel", "write"),
        ("PUT", "/v1/skus/burger", "write"),
        ("DELETE", "/v1/kitchens/k1/stations/grill", "write"),
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/agents/work", None),
    ],
)
def test_requests_are_classified_by_method_and_path(
    method: str, path: str, expected: str | None
) -> None:
    """Intake, agent sync/enroll, other reads and other writes; probes and the agents' work
    doorbell (a long poll: its latency is a wait, not congestion) are never limited."""
    assert traffic_class(method, path) == expected


def test_a_request_over_its_class_limit_gets_503_with_retry_after() -> None:
    """At its limit a class answers 503 overloaded problem+json with an integer Retry-After."""
    answers: list[httpx.Response] = []

    async def scenario(
        client: httpx.AsyncClient, kitchen: Kitchen, _mw: AdmissionMiddleware
    ) -> None:
        held = await hold(client, kitchen, "POST", "/v1/orders")
        answers.append(await client.post("/v1/orders", json={}))
        kitchen.go_on.set()
        answers.append(await held)

    metrics = run(scenario)
    refused, finished = answers
    assert finished.status_code == 200
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    body = json.loads(refused.content)
    assert body["type"] == OVERLOADED
    assert body["status"] == 503
    assert body["traffic_class"] == "intake"
    assert rejected(metrics, "intake") == 1.0


def test_every_class_is_exported_at_zero_before_any_refusal() -> None:
    """The rejection counter has a series per class from the start, for dashboards and alerts."""

    async def scenario(
        client: httpx.AsyncClient, _kitchen: Kitchen, _mw: AdmissionMiddleware
    ) -> None:
        assert (await client.get("/v1/orders")).status_code == 200

    metrics = run(scenario)
    assert [rejected(metrics, name) for name in TRAFFIC_CLASSES] == [0.0] * len(TRAFFIC_CLASSES)


def test_each_class_limit_load_latency_and_target_are_gauges_read_at_scrape() -> None:
    """An operator sees why requests are refused: the limit, what is in progress, the smoothed
    latency and the target it is held against, per class, as they are at the scrape."""
    seen: dict[str, float | None] = {}

    def sample(metrics: Metrics, name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"traffic_class": "intake"})

    async def scenario(
        client: httpx.AsyncClient, kitchen: Kitchen, mw: AdmissionMiddleware
    ) -> None:
        held = await hold(client, kitchen, "POST", "/v1/orders")
        seen["in_flight_while_held"] = sample(mw.metrics, "brigade_admission_in_flight")
        kitchen.go_on.set()
        assert (await held).status_code == 200
        seen["in_flight_after"] = sample(mw.metrics, "brigade_admission_in_flight")
        seen["limit"] = sample(mw.metrics, "brigade_admission_limit")
        seen["ewma"] = sample(mw.metrics, "brigade_admission_latency_ewma_seconds")
        seen["target"] = sample(mw.metrics, "brigade_admission_target_seconds")
        state = mw.state.classes["intake"]
        seen["state_ewma"] = state.latency_ewma_s

    run(scenario, limit=3)
    assert seen["in_flight_while_held"] == 1.0
    assert seen["in_flight_after"] == 0.0
    assert seen["limit"] == 3.0
    assert seen["ewma"] == seen["state_ewma"]
    assert seen["ewma"] is not None and seen["ewma"] > 0.0
    assert seen["target"] is not None and seen["target"] >= ClassBudget().latency_floor_s


def test_health_and_metrics_are_never_limited() -> None:
    """With reads at their limit, /healthz and /metrics still answer."""
    answers: list[httpx.Response] = []

    async def scenario(
        client: httpx.AsyncClient, kitchen: Kitchen, _mw: AdmissionMiddleware
    ) -> None:
        held = await hold(client, kitchen, "GET", "/v1/orders")
        answers.append(await client.get("/v1/kitchens"))
        answers.append(await client.get("/healthz"))
        answers.append(await client.get("/metrics"))
        kitchen.go_on.set()
        await held

    metrics = run(scenario)
    assert [a.status_code for a in answers] == [503, 200, 200]
    assert rejected(metrics, "read") == 1.0


def test_a_saturated_class_does_not_block_the_others() -> None:
    """Agent syncs at their limit are refused while intake, reads and writes go through."""
    answers: dict[str, int] = {}

    async def scenario(
        client: httpx.AsyncClient, kitchen: Kitchen, _mw: AdmissionMiddleware
    ) -> None:
        held = await hold(client, kitchen, "POST", "/v1/agents/sync")
        answers["sync"] = (await client.post("/v1/agents/sync", json={})).status_code
        answers["enroll"] = (await client.post("/v1/agents/enroll", json={})).status_code
        answers["intake"] = (await client.post("/v1/orders", json={})).status_code
        answers["read"] = (await client.get("/v1/orders")).status_code
        answers["write"] = (await client.put("/v1/skus/burger", json={})).status_code
        kitchen.go_on.set()
        await held

    metrics = run(scenario)
    assert answers == {"sync": 503, "enroll": 503, "intake": 200, "read": 200, "write": 200}
    assert rejected(metrics, "sync") == 2.0


def test_a_finished_request_frees_its_slot() -> None:
    """Once the request in progress has answered, the next one of its class is admitted."""
    answers: list[int] = []

    async def scenario(
        client: httpx.AsyncClient, kitchen: Kitchen, middleware: AdmissionMiddleware
    ) -> None:
        held = await hold(client, kitchen, "POST", "/v1/orders")
        kitchen.go_on.set()
        answers.append((await held).status_code)
        answers.append((await client.post("/v1/orders", json={})).status_code)
        assert middleware.state.classes["intake"].in_flight == 0

    run(scenario)
    assert answers == [200, 200]


def test_a_request_that_fails_frees_its_slot_too() -> None:
    """An exception in the app releases the slot (counted as not ok) instead of leaking it."""

    async def scenario(
        client: httpx.AsyncClient, _kitchen: Kitchen, middleware: AdmissionMiddleware
    ) -> None:
        with pytest.raises(RuntimeError):
            await client.post("/v1/boom")
        assert middleware.state.classes["write"].in_flight == 0
        assert (await client.post("/v1/other")).status_code == 200

    run(scenario)


def _app_with_one_read_held(
    tmp_path: Path,
    while_held: Callable[[httpx.AsyncClient], Awaitable[dict[str, httpx.Response]]],
    **settings: Any,
) -> dict[str, httpx.Response]:
    """Through create_app, every class limited to one: hold one read in progress, run
    ``while_held``, release the read, scrape. Its answers plus ``held`` and ``scrape``."""
    config = Settings(
        db_path=tmp_path / "cp.db",
        admission_intake_limit=1,
        admission_sync_limit=1,
        admission_read_limit=1,
        admission_write_limit=1,
        admission_min_limit=1,
        admission_intake_min_limit=1,
        **settings,
    )
    store = Store.open(config.db_path)
    answers: dict[str, httpx.Response] = {}

    async def main() -> None:
        app = create_app(config, store=store)
        entered, go_on = asyncio.Event(), asyncio.Event()

        async def held() -> dict[str, Any]:
            entered.set()
            await go_on.wait()
            return {}

        app.add_api_route("/v1/test/held", held, methods=["GET"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            first = asyncio.create_task(client.get("/v1/test/held"))
            await asyncio.wait_for(entered.wait(), DEADLINE_S)
            answers.update(await while_held(client))
            go_on.set()
            answers["held"] = await first
            answers["scrape"] = await client.get("/metrics")

    try:
        asyncio.run(main())
    finally:
        store.close()
    return answers


def test_the_app_refuses_overload_with_a_request_id_and_counts_it(tmp_path: Path) -> None:
    """Through create_app: a read over BRIGADE_ADMISSION_READ_LIMIT is 503, /healthz is not."""

    async def while_held(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
        return {"refused": await client.get("/v1/kitchens"), "health": await client.get("/healthz")}

    answers = _app_with_one_read_held(tmp_path, while_held)
    refused = answers["refused"]
    assert answers["held"].status_code == 200
    assert refused.status_code == 503
    assert refused.json()["type"] == OVERLOADED
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-request-id"]
    assert answers["health"].status_code == 200
    assert 'brigade_admission_rejected_total{traffic_class="read"} 1.0' in answers["scrape"].text


def test_admission_limits_must_lie_between_floor_and_ceiling(tmp_path: Path) -> None:
    """A class limit below the floor is refused when the settings are built."""
    with pytest.raises(ValueError, match="admission_read_limit"):
        Settings(db_path=tmp_path / "cp.db", admission_read_limit=8, admission_min_limit=16)


def test_intake_has_its_own_floor_and_every_class_the_tolerance(tmp_path: Path) -> None:
    """Intake may shrink to BRIGADE_ADMISSION_INTAKE_MIN_LIMIT, the other classes to
    BRIGADE_ADMISSION_MIN_LIMIT; all judge latency by BRIGADE_ADMISSION_LATENCY_TOLERANCE."""
    settings = Settings(
        db_path=tmp_path / "cp.db",
        admission_intake_min_limit=3,
        admission_min_limit=40,
        admission_latency_tolerance=2.5,
    )
    budgets = budgets_from(settings)
    assert budgets["intake"].min_limit == 3
    assert {budgets[name].min_limit for name in ("sync", "read", "write")} == {40}
    assert {b.tolerance for b in budgets.values()} == {2.5}


def test_an_intake_limit_below_its_floor_is_refused(tmp_path: Path) -> None:
    """The intake limit is checked against the intake floor when the settings are built."""
    with pytest.raises(ValueError, match="admission_intake_min_limit"):
        Settings(db_path=tmp_path / "cp.db", admission_intake_limit=2, admission_intake_min_limit=4)


def test_slow_answers_measured_by_the_middleware_cut_the_limit() -> None:
    """The middleware times each admitted request on its clock and feeds it back: rounds of
    requests that fill the class and each take a second (over the absolute target) shrink
    its limit, so the next burst is refused sooner; the other classes keep theirs."""
    clock = [0.0]
    barrier: list[asyncio.Barrier] = []

    async def slow_kitchen(scope: Scope, receive: Receive, send: Send) -> None:
        await barrier[0].wait()  # the whole round is in progress before any finishes
        clock[0] += 1.0
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    budgets = {name: ClassBudget(initial=8, min_limit=1) for name in TRAFFIC_CLASSES}
    middleware = AdmissionMiddleware(
        slow_kitchen, metrics=Metrics(), budgets=budgets, monotonic=lambda: clock[0]
    )

    async def main() -> None:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            for _ in range(4):
                size = int(middleware.state.classes["intake"].limit)
                barrier[:] = [asyncio.Barrier(size)]
                answers = await asyncio.wait_for(
                    asyncio.gather(*(client.post("/v1/orders", json={}) for _ in range(size))),
                    DEADLINE_S,
                )
                assert {a.status_code for a in answers} == {201}

    asyncio.run(main())
    limits = {name: c.limit for name, c in middleware.state.classes.items()}
    assert limits["intake"] <= 8 * budgets["intake"].backoff
    assert limits["read"] == limits["sync"] == limits["write"] == 8


def test_refusals_are_built_once_and_never_share_headers_with_the_next() -> None:
    """The 503's headers and body are built once per class and Retry-After; what the
    middlewares outside add to one refusal (a request id) never leaks into the next."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def stamp_request_id(scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"].append((b"x-request-id", b"r"))
                seen.append(list(message["headers"]))
            await send(message)

        await refusing(scope, receive, stamped)

    kitchen = Kitchen()
    budgets = {name: ClassBudget(initial=1, min_limit=1) for name in TRAFFIC_CLASSES}
    refusing = AdmissionMiddleware(kitchen, metrics=Metrics(), budgets=budgets)

    async def main() -> None:
        transport = httpx.ASGITransport(app=stamp_request_id)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            held = await hold(client, kitchen, "POST", "/v1/orders")
            first = await client.post("/v1/orders", json={})
            second = await client.post("/v1/orders", json={})
            kitchen.go_on.set()
            await held
        assert first.status_code == second.status_code == 503
        assert first.content == second.content

    asyncio.run(main())
    refusals = [h for h in seen if (b"retry-after", b"1") in h]
    assert len(refusals) == 2
    assert all(sum(name == b"x-request-id" for name, _ in h) == 1 for h in refusals)


def test_refusals_are_held_before_answering_but_only_up_to_a_bound() -> None:
    """With a refusal hold, a refused request waits before its 503 (a client retrying at once
    cannot spin); once max_held refusals wait, the next is answered at once."""
    answers: dict[str, Any] = {}

    async def main() -> None:
        kitchen = Kitchen()
        budgets = {
            name: ClassBudget(initial=1, min_limit=1, refusal_hold_s=3600.0)
            for name in TRAFFIC_CLASSES
        }
        middleware = AdmissionMiddleware(kitchen, metrics=Metrics(), budgets=budgets, max_held=1)
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            held = await hold(client, kitchen, "POST", "/v1/orders")
            first_refusal = asyncio.create_task(client.post("/v1/orders", json={}))

            async def first_is_held() -> None:
                while middleware.held_refusals < 1:
                    await asyncio.sleep(0)

            await asyncio.wait_for(first_is_held(), DEADLINE_S)
            second_refusal = await asyncio.wait_for(client.post("/v1/orders", json={}), DEADLINE_S)
            answers["second"] = second_refusal.status_code
            answers["first_still_held"] = not first_refusal.done()
            first_refusal.cancel()
            kitchen.go_on.set()
            await held
            with pytest.raises(asyncio.CancelledError):
                await first_refusal

    asyncio.run(main())
    assert answers == {"second": 503, "first_still_held": True}


def test_refusals_are_counted_each_but_logged_once_per_class_and_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under overload a JSON access line per refusal would add to the overload: twenty reads
    refused at once give one 503 line (the next one says how many went unlogged), and all
    twenty are counted; the admitted request keeps its own line."""

    async def while_held(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
        for _ in range(20):
            assert (await client.get("/v1/kitchens")).status_code == 503
        return {}

    caplog.set_level("INFO", logger="brigade.http")
    answers = _app_with_one_read_held(tmp_path, while_held, admission_refusal_hold_s=0.0)
    assert answers["held"].status_code == 200
    scraped = [answers["scrape"].text]
    lines = [r for r in caplog.records if r.name == "brigade.http"]
    refusals = [r.fields for r in lines if r.fields["status"] == 503]  # type: ignore[attr-defined]
    assert refusals == [
        {**refusals[0], "traffic_class": "read", "suppressed_refusals": 0, "path": "/v1/kitchens"}
    ]
    logged_ok = [r.fields["path"] for r in lines if r.fields["status"] == 200]  # type: ignore[attr-defined]
    assert logged_ok == ["/v1/test/held", "/metrics"]
    assert 'brigade_admission_rejected_total{traffic_class="read"} 20.0' in scraped[0]
