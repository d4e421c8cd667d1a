"""The monthly review's figures on synthetic histories with known answers: period spent,
year to date, the trend arithmetic, % utilized, the suggested action and committed use."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from budget_guard.domain.review import (
    ActionKind,
    PeriodHistory,
    build_review,
    period_history,
    review_days,
    trend,
)
from tests.factories import budget

USD = 1_000_000
NOW = dt.datetime(2026, 11, 11, 0, 0, tzinfo=dt.UTC)  # ten whole days of November


def every_day(first: dt.date, last: dt.date, amount: int) -> dict[dt.date, int]:
    return {first + dt.timedelta(days=n): amount for n in range((last - first).days + 1)}


def history(previous: int, current: int) -> PeriodHistory:
    return PeriodHistory(
        days=((dt.date(2026, 11, 1), current), (dt.date(2026, 11, 2), 0)),
        year_to_date=0,
        previous_spent=previous,
        previous_to_date=previous,
    )


@pytest.mark.parametrize(
    ("previous", "current", "text", "percent"),
    [
        (100, 120, "up 20 %", 20),
        (100, 95, "down 5 %", -5),
        (100, 100, "flat", 0),
        (300, 301, "flat", 0),
        (3, 4, "up 33 %", 33),
        (0, 50, "new", None),
        (0, 0, "flat", None),
    ],
)
def test_trend_arithmetic(previous: int, current: int, text: str, percent: int | None) -> None:
    found = trend(history(previous, current))
    assert (found.text, found.percent) == (text, percent)


def test_no_trend_on_the_first_day_or_past_what_the_ledger_keeps() -> None:
    first_day = PeriodHistory(((dt.date(2026, 11, 1), 5),), 0, 100, 0)
    assert trend(first_day).text == "n/a"
    forgotten = PeriodHistory(((dt.date(2026, 11, 1), 5), (dt.date(2026, 11, 2), 0)), 0, None, None)
    assert trend(forgotten).text == "n/a"


def test_period_history_sums_the_period_the_year_and_the_previous_period() -> None:
    monthly = budget("team", "1000")
    days = every_day(dt.date(2026, 1, 1), dt.date(2026, 10, 31), 2 * USD)
    days |= every_day(dt.date(2026, 11, 1), dt.date(2026, 11, 11), 3 * USD)
    found = period_history(monthly, days, NOW)
    assert len(found.days) == 11 and found.period_spent == 33 * USD
    assert found.year_to_date == 304 * 2 * USD + 33 * USD
    assert found.previous_spent == 31 * 2 * USD
    assert found.previous_to_date == 10 * 2 * USD  # October 1-10, against November 1-10
    assert trend(found).text == "up 50 %"


def test_review_days_reach_back_to_the_year_the_previous_period_and_the_lookback() -> None:
    monthly = budget("team", "1000")
    assert review_days(monthly, NOW) == (dt.date(2026, 1, 1), dt.date(2026, 11, 11))
    early = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    assert review_days(monthly, early) == (dt.date(2025, 12, 1), dt.date(2026, 1, 5))
    yearly = budget("year", "1000", period="Yearly")
    assert review_days(yearly, NOW)[0] == dt.date(2025, 10, 8)  # 400 days kept, no more


def review(limit: str, per_day: int, **spec: object) -> object:
    team = budget("team", limit, **spec)
    days = every_day(dt.date(2026, 10, 1), dt.date(2026, 11, 10), per_day)
    spent = sum(v for d, v in days.items() if d.month == 11)
    limit_micros = team.effective_limit(team.window(NOW))
    return build_review(team, days, NOW, allocated_micros=limit_micros, spent_micros=spent)


def test_the_figures_and_the_action_of_a_budget_on_track() -> None:
    found = review("1000", 10 * USD)
    assert found.spent_micros == 100 * USD and found.projected_micros == 300 * USD
    assert found.utilization == Fraction(1, 10)
    assert found.action.kind is ActionKind.OK and found.action.text == "OK"
    assert found.trend.text == "flat"


def test_a_forecast_near_the_limit_asks_to_monitor() -> None:
    found = review("320", 10 * USD)  # 300 projected: 93.75 %
    assert found.action.text == "monitor"


def test_a_forecast_past_the_limit_asks_for_the_difference_in_whole_dollars() -> None:
    found = review("250.50", 10 * USD)  # 300 projected
    assert found.action.kind is ActionKind.REQUEST
    assert found.action.text == "request +$50"


def test_a_reached_limit_is_a_hard_limit_in_enforce_mode_and_a_request_in_observe() -> None:
    assert review("90", 10 * USD).action.text == "hard limit active"
    observed = review("90", 10 * USD, enforcement="Observe")
    assert observed.action.text == "request +$210"


def test_an_anomaly_asks_to_monitor() -> None:
    team = budget("team", "1000")
    days = every_day(dt.date(2026, 10, 1), dt.date(2026, 11, 10), USD)
    found = build_review(
        team, days, NOW, allocated_micros=1000 * USD, spent_micros=10 * USD, anomaly=True
    )
    assert found.action.text == "monitor"


def test_a_per_user_template_reports_its_users() -> None:
    template = budget("each", "5", user="*")
    days = every_day(dt.date(2026, 11, 1), dt.date(2026, 11, 10), 2 * USD)
    found = build_review(
        template, days, NOW, allocated_micros=5 * USD, spent_micros=0, users_exhausted=2
    )
    assert found.per_user and found.spent_micros == 20 * USD
    assert found.utilization is None and found.forecast is None
    assert found.action.text == "hard limit active"


def test_committed_use_utilization_and_what_would_go_unused() -> None:
    found = review("1000", 10 * USD, commitment={"amount": "400", "discountPercent": "20"})
    use = found.commitment_use
    assert use is not None
    assert use.utilization == Fraction(1, 4)  # $100 of $400
    assert use.projected_unused_micros == 100 * USD  # $300 projected
    assert use.at_risk
    assert use.discount_micros == 20 * USD
    assert use.summary == "25.0 % of $400.00; $100.00 projected unused"


def test_a_commitment_on_track_is_not_at_risk() -> None:
    found = review("1000", 10 * USD, commitment={"amount": "250"})
    use = found.commitment_use
    assert use is not None and not use.at_risk and use.projected_unused_micros == 0
    assert use.discount_micros == 0
