"""Rush comparison: a deterministic simulated day, Brigade's cores vs a naive baseline."""

from __future__ import annotations

import doctest
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulators import rush_compare
from simulators.cli import app
from simulators.rush_compare import (
    SKUS,
    Order,
    OrderOutcome,
    Outage,
    RushDay,
    compare,
    day_orders,
    metrics,
    simulate,
    transport_s,
)

#: A short, quiet day with no faults and no noise: every prep takes its nominal time.
CALM = RushDay(
    kitchens=1,
    start_h=11.0,
    end_h=11.5,
    slow_kitchen=0,
    noise_sd=0.0,
    outages=(),
    faults=(),
)
#: A short day around the rush with kitchen 2 losing power for half an hour.
SHORT_RUSH = RushDay(kitchens=3, start_h=11.75, end_h=12.75, outages=(Outage(2, 12.0, 12.5),))
REQUIRED = {
    "orders_submitted",
    "orders_accepted",
    "orders_rejected",
    "orders_late",
    "on_time_orders",
    "on_time_ratio",
    "mean_hold_s",
    "waste_units",
    "sla_alerts",
    "sla_alert_median_lead_s",
    "sla_alert_recall",
}


def chicken(order_id: str, *, at: float, promise_s: float, quantity: int = 1) -> Order:
    return Order(order_id, at, "roast-chicken", quantity, "normal", at + promise_s, "store-1")


def test_the_module_examples_hold() -> None:
    """The docstring examples of the module pass."""
    failed, _ = doctest.testmod(rush_compare)
    assert failed == 0


def test_a_seed_gives_the_same_report_twice() -> None:
    """Two runs of the same seeded day are equal, figure for figure."""
    assert compare(SHORT_RUSH, seed=5) == compare(SHORT_RUSH, seed=5)


def test_both_policies_see_the_identical_order_stream() -> None:
    """Brigade and the baseline are offered the same orders, same promises, same quantities."""
    brigade = simulate(SHORT_RUSH, 4, "brigade")
    baseline = simulate(SHORT_RUSH, 4, "baseline")
    offered = [(o.order_id, o.quantity, o.promised_by) for o in brigade.outcomes]
    assert offered == [(o.order_id, o.quantity, o.promised_by) for o in baseline.outcomes]
    assert len(offered) == len(day_orders(SHORT_RUSH, 4)) > 20


def test_food_ready_after_it_must_leave_makes_the_order_late() -> None:
    """An 18-minute chicken promised 20 minutes out, plus transport, arrives late."""
    run = simulate(CALM, 1, "baseline", [chicken("o1", at=11 * 3600.0, promise_s=20 * 60.0)])
    (outcome,) = run.outcomes
    assert outcome.outcome == "late"
    assert run.metrics["orders_late"] == 1 and run.metrics["on_time_orders"] == 0
    assert run.metrics["waste_units"] == 0


def test_food_held_past_its_window_is_wasted_and_late() -> None:
    """Cooked at once for a promise 75 minutes out, the chicken waits past its holding limit."""
    run = simulate(
        CALM, 1, "baseline_asap", [chicken("o1", at=11 * 3600.0, promise_s=75 * 60.0, quantity=3)]
    )
    (outcome,) = run.outcomes
    assert outcome.outcome == "wasted"
    limit_min = SKUS["roast-chicken"].max_hold_min
    assert outcome.hold_s is not None and limit_min is not None
    assert outcome.hold_s > limit_min * 60
    assert run.metrics["waste_units"] == 3 and run.metrics["orders_late"] == 1


def test_food_ready_just_before_it_leaves_is_on_time() -> None:
    """Promised one minute after cook plus transport, the order is on time after a short hold."""
    transport = transport_s(CALM, 1)["k1", "store-1"]
    promise = SKUS["roast-chicken"].duration_s + transport + 60.0
    run = simulate(CALM, 1, "baseline_asap", [chicken("o1", at=11 * 3600.0, promise_s=promise)])
    assert run.metrics["on_time_orders"] == 1 and run.metrics["on_time_ratio"] == 1.0
    assert run.metrics["mean_hold_s"] == 60.0


def test_the_baseline_cooks_to_the_ticket_and_does_not_waste() -> None:
    """The baseline starts at promise - transport - recipe time: the same far-off order that
    cooked at once goes stale is ready just as it must leave."""
    run = simulate(
        CALM, 1, "baseline", [chicken("o1", at=11 * 3600.0, promise_s=75 * 60.0, quantity=3)]
    )
    (outcome,) = run.outcomes
    assert outcome.outcome == "on_time" and outcome.hold_s == 0.0
    assert run.metrics["waste_units"] == 0


def test_recall_counts_only_alerts_raised_before_the_promise() -> None:
    """A late order alerted after its promise is a miss; alerts on on-time orders don't count."""
    outcomes = [
        OrderOutcome("in-time", 1, 1000.0, "late", alerts=((400.0, 600.0),)),
        OrderOutcome("too-late", 1, 1000.0, "late", alerts=((1100.0, -100.0),)),
        OrderOutcome("false-alarm", 1, 1000.0, "on_time", alerts=((200.0, 800.0),)),
        OrderOutcome("refused", 1, 1000.0, "rejected", reason="backpressure_shed"),
    ]
    figures = metrics(outcomes)
    assert figures["orders_late"] == 2 and figures["orders_rejected"] == 1
    assert figures["sla_alert_recall"] == 0.5
    assert figures["sla_alerts"] == 3 and figures["sla_alert_median_lead_s"] == 600.0


def test_brigade_never_plans_to_an_offline_kitchen() -> None:
    """No plan or move lands on kitchen 2 while it has no power; it gets work before and after."""
    run = simulate(SHORT_RUSH, 2, "brigade")
    down = (12.0 * 3600, 12.5 * 3600)
    to_k2 = [(at, why) for at, kitchen, why in run.placements if kitchen == "k2"]
    assert not [(at, why) for at, why in to_k2 if why != "start" and down[0] <= at < down[1]]
    assert any(at < down[0] for at, _ in to_k2) and any(at >= down[1] for at, _ in to_k2)


def test_the_baseline_keeps_work_queued_at_the_kitchen_that_went_down() -> None:
    """The naive policy does not re-plan: nothing starts at kitchen 2 while it is down."""
    run = simulate(SHORT_RUSH, 2, "baseline")
    starts = [at for at, kitchen, why in run.placements if kitchen == "k2" and why == "start"]
    assert not [at for at in starts if 12.0 * 3600 <= at < 12.5 * 3600]


def test_the_cli_writes_every_required_figure_for_both_policies(tmp_path: Path) -> None:
    """`scenario rush --compare-baseline` prints the table and writes both columns as JSON."""
    report = tmp_path / "rush.json"
    args = ["scenario", "rush", "--compare-baseline", "--seed", "3", "--kitchens", "3"]
    result = CliRunner().invoke(app, [*args, "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "on-time ratio" in result.output and "baseline" in result.output
    written = json.loads(report.read_text())
    for policy in ("brigade", "baseline"):
        assert set(written[policy]) >= REQUIRED, REQUIRED - set(written[policy])
        assert written[policy]["seed"] == 3
    assert written["seed"] == 3 and written["params"]["kitchens"] == 3


def test_the_cli_refuses_to_compare_another_scenario() -> None:
    """Only the rush scenario has a simulated comparison."""
    result = CliRunner().invoke(app, ["scenario", "partition", "--compare-baseline"])
    assert result.exit_code == 2


def test_a_day_whose_faults_name_a_missing_kitchen_is_refused() -> None:
    """The slow kitchen and the outage must exist in the day."""
    with pytest.raises(ValueError, match=r"kitchens 1\.\.3"):
        replace(SHORT_RUSH, kitchens=1)
