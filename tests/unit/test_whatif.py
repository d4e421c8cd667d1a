"""The what-if replay on synthetic histories with known verdicts, and the parsing of the
periods and groupings the reports are asked for."""

from __future__ import annotations

import datetime as dt

import pytest

from budget_guard.domain.spend import (
    DayRange,
    SpendCell,
    SpendQueryError,
    SpendRow,
    group_spend,
    parse_group_by,
)
from budget_guard.domain.whatif import simulate
from tests.factories import budget

USD = 1_000_000


def cells(
    first: dt.date, days: int, tenant: str, amount: int, *, user: str | None = None
) -> list[SpendCell]:
    return [
        SpendCell(first + dt.timedelta(days=n), tenant, "chat", "gpt-4o", user, amount, 10)
        for n in range(days)
    ]


NOV = dt.date(2026, 11, 1)


def test_a_tenant_over_its_proposed_limit_is_blocked_when_it_would_reach_it() -> None:
    history = cells(NOV, 30, "acme", 10 * USD) + cells(NOV, 30, "globex", 1 * USD)
    result = simulate([budget("acme", "255", tenant="acme")], history)
    (outcome,) = result.outcomes
    assert outcome.blocks and outcome.period_key == "2026-11"
    # $250 by the end of Nov 25; the next $5 take half of Nov 26.
    assert outcome.blocked_at == dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    assert outcome.denied == 45 * USD and outcome.recorded == 300 * USD
    assert set(result.tenants_blocked) == {"acme"}
    assert result.denied == 45 * USD
    assert result.recorded == 330 * USD


def test_observe_budgets_report_what_they_would_deny_and_block_nobody() -> None:
    history = cells(NOV, 30, "acme", 10 * USD)
    result = simulate([budget("acme", "100", tenant="acme", enforcement="Observe")], history)
    (outcome,) = result.outcomes
    assert not outcome.blocks and outcome.denied == 200 * USD
    assert result.tenants_blocked == {} and result.denied == 0


def test_a_global_budget_blocks_every_tenant_with_spend_after_it_is_reached() -> None:
    history = cells(NOV, 10, "acme", 10 * USD) + cells(NOV, 10, "globex", 10 * USD)
    result = simulate([budget("all", "100")], history)
    assert set(result.tenants_blocked) == {"acme", "globex"}
    # $20 a day together: the limit is reached exactly at the end of Nov 5.
    assert result.tenants_blocked["acme"].first_blocked_at == dt.datetime(
        2026, 11, 6, tzinfo=dt.UTC
    )
    assert result.denied == 100 * USD


def test_spend_a_budget_denies_no_longer_counts_toward_the_others() -> None:
    history = cells(NOV, 10, "acme", 10 * USD)
    result = simulate([budget("acme", "50", tenant="acme"), budget("all", "80")], history)
    by_name = {o.budget.ref.name: o for o in result.outcomes}
    assert by_name["acme"].blocks
    assert not by_name["all"].blocks  # acme's denied spend never reaches it
    assert by_name["all"].counted == 50 * USD


def test_periods_reset_in_the_replay() -> None:
    history = cells(dt.date(2026, 10, 25), 14, "acme", 10 * USD)  # Oct 25 - Nov 7
    result = simulate([budget("acme", "100", tenant="acme")], history)
    assert [(o.period_key, o.blocks) for o in result.outcomes] == [
        ("2026-10", False),
        ("2026-11", False),
    ]
    weekly = simulate([budget("acme", "50", tenant="acme", period="Weekly")], history)
    assert [o.period_key for o in weekly.outcomes if o.blocks] == ["2026-W44", "2026-W45"]


def test_per_user_budgets_use_the_days_with_user_detail_and_tiers_are_not_replayed() -> None:
    history = cells(NOV, 5, "acme", 4 * USD, user="alice") + cells(NOV, 5, "acme", USD, user="bob")
    result = simulate(
        [budget("each", "10", user="*"), budget("pro", "1", tier="pro", user="*")], history
    )
    blocked = [(o.subject, o.blocks) for o in result.outcomes]
    assert blocked == [("alice", True), ("bob", False)]
    assert result.skipped == {"default/pro": "scope.tier: the history does not record tiers"}


def test_group_spend_sums_by_the_dimensions_asked() -> None:
    history = cells(NOV, 2, "acme", 3 * USD, user="alice") + cells(NOV, 2, "acme", USD, user="bob")
    assert group_spend(history, ("tenant",)) == [SpendRow(("acme",), 8 * USD, 40)]
    by_user = {row.group: row.cost_micros for row in group_spend(history, ("user", "day"))}
    assert by_user[("alice", "2026-11-01")] == 3 * USD


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-01", "2026-11-30", (dt.date(2026, 11, 1), dt.date(2026, 11, 30))),
        ("2026-11", "2026-11", (dt.date(2026, 11, 1), dt.date(2026, 11, 30))),
        ("2026-12", "2027-02", (dt.date(2026, 12, 1), dt.date(2027, 2, 28))),
    ],
)
def test_day_ranges(start: str, end: str, expected: tuple[dt.date, dt.date]) -> None:
    found = DayRange.parse(start, end)
    assert (found.first, found.last) == expected


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-31", "2026-12-01", "--from: '2026-11-31' is not a day like 2026-11-01"),
        ("yesterday", "2026-12-01", "--from: 'yesterday' is not a day like 2026-11-01"),
        ("2026-12-01", "2026-11-01", "--from 2026-12-01 is after --to 2026-11-01"),
        (None, "2026-11-01", "--from is required"),
        ("2020-01-01", "2026-11-01", "at most 800 days at a time"),
    ],
)
def test_malformed_day_ranges_say_what_to_write(start: str | None, end: str, message: str) -> None:
    with pytest.raises(SpendQueryError, match=message):
        DayRange.parse(start, end)


def test_group_by_names_the_unknown_dimension() -> None:
    assert parse_group_by("tenant, user") == ("tenant", "user")
    assert parse_group_by(None) == ("tenant", "feature", "model")
    with pytest.raises(SpendQueryError, match="--group-by: unknown dimension 'team'; use"):
        parse_group_by("tenant,team")
    with pytest.raises(SpendQueryError, match="each dimension at most once"):
        parse_group_by("tenant,tenant")
