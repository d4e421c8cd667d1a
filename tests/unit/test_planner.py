"""ChargePlanner: cached plans are reused only while nothing about them changes."""

from __future__ import annotations

import datetime as dt

from budget_guard.domain.decision import ChargePlanner, plan_charges
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from tests.factories import budget, burst

NOW = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)
WHO = RequestIdentity(tenant="acme", user="alice")


def test_plans_are_reused_within_a_period() -> None:
    planner = ChargePlanner(BudgetSnapshot([budget("t", "10", tenant="acme", period="Daily")]))
    first = planner.plan(WHO, NOW)
    assert planner.plan(WHO, NOW + dt.timedelta(hours=11, minutes=59)) is first
    assert first == plan_charges(planner.snapshot, WHO, NOW)


def test_a_new_period_gives_a_new_plan() -> None:
    planner = ChargePlanner(BudgetSnapshot([budget("t", "10", tenant="acme", period="Daily")]))
    first = planner.plan(WHO, NOW)
    next_day = planner.plan(WHO, NOW + dt.timedelta(hours=12))
    assert next_day is not first
    assert next_day[0].window.key == "2026-11-11"
    assert planner.plan(WHO, NOW - dt.timedelta(days=1))[0].window.key == "2026-11-09"


def test_a_burst_pool_opening_or_closing_gives_a_new_plan() -> None:
    opens, closes = NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)
    snapshot = BudgetSnapshot(
        [budget("t", "10", tenant="acme", period="Daily")],
        [burst("extra", "t", "5", opens, closes)],
    )
    planner = ChargePlanner(snapshot)
    assert planner.plan(WHO, NOW)[0].pools == ()
    assert [p.ref.name for p in planner.plan(WHO, opens)[0].pools] == ["extra"]
    assert planner.plan(WHO, closes)[0].pools == ()


def test_identities_without_budgets_are_cached_too() -> None:
    planner = ChargePlanner(BudgetSnapshot([budget("t", "10", tenant="globex")]))
    assert planner.plan(WHO, NOW) == ()
    assert planner.plan(WHO, NOW + dt.timedelta(days=400)) == ()
