"""The end-of-period forecast on synthetic histories with known answers: flat, rising,
weekday-shaped and seasonal; too little history says so."""

from __future__ import annotations

import datetime as dt

from budget_guard.domain.forecast import forecast_period
from tests.factories import budget

USD = 1_000_000


def history(first: dt.date, values: list[int]) -> dict[dt.date, int]:
    return {first + dt.timedelta(days=n): value for n, value in enumerate(values)}


def at(day: dt.date, hour: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def test_a_flat_history_projects_the_same_rate_to_the_end() -> None:
    monthly = budget("flat", "1000")
    now = at(dt.date(2026, 11, 11))  # midnight: ten days spent, twenty to come
    days = history(dt.date(2026, 10, 14), [10 * USD] * 28)
    result = forecast_period(monthly, monthly.window(now), 1000 * USD, 100 * USD, days, now)
    assert result.projected_micros == 300 * USD
    assert result.limit_day is None and not result.reaches_limit
    assert result.history_days == 28
    assert result.basis == "28 days"


def test_a_rising_history_is_projected_along_its_line() -> None:
    monthly = budget("rising", "1000")
    now = at(dt.date(2026, 11, 11))
    # One dollar more every day: 1, 2, ..., 10 over Nov 1-10; the line goes on.
    days = history(dt.date(2026, 11, 1), [n * USD for n in range(1, 11)])
    spent = sum(days.values())  # 55
    result = forecast_period(monthly, monthly.window(now), 1000 * USD, spent, days, now)
    assert result.projected_micros == spent + sum(n * USD for n in range(11, 31))  # 465
    assert result.basis.startswith("10 days, rising")


def test_a_rising_history_crosses_the_limit_with_days_left() -> None:
    monthly = budget("rising", "300")
    now = at(dt.date(2026, 11, 11))
    days = history(dt.date(2026, 11, 1), [n * USD for n in range(1, 11)])
    result = forecast_period(monthly, monthly.window(now), 300 * USD, 55 * USD, days, now)
    # 55 + 11 + 12 + ... + 24 = 300: the limit is reached with Nov 24's spend.
    assert result.reaches_limit
    assert result.limit_day == dt.date(2026, 11, 24)
    assert result.days_left_at_limit == 6


def test_weekdays_and_weekends_are_projected_by_their_own_rate() -> None:
    monthly = budget("office", "1000")
    first = dt.date(2026, 10, 12)  # a Monday; four whole weeks up to Nov 8
    shape = [10 * USD] * 5 + [2 * USD] * 2
    days = history(first, shape * 4)
    now = at(dt.date(2026, 11, 9))  # Monday: Nov 9-30 is three weeks and a Monday
    spent = sum(v for d, v in days.items() if d.month == 11)  # Nov 1 (Sun) .. Nov 8 (Sun)
    result = forecast_period(monthly, monthly.window(now), 1000 * USD, spent, days, now)
    assert result.projected_micros == spent + 3 * 54 * USD + 10 * USD
    assert "weekday-shaped" in result.basis


def test_the_seasonal_schedule_scales_the_projection() -> None:
    doubled = budget("season", "1000", schedule=[{"months": [12], "multiplier": "2"}])
    # November spent $10 a day, December so far $20 a day (the schedule's doubling).
    days = history(dt.date(2026, 11, 7), [10 * USD] * 24 + [20 * USD] * 4)
    now = at(dt.date(2026, 12, 5))
    limit = doubled.effective_limit(doubled.window(now))
    result = forecast_period(doubled, doubled.window(now), limit, 80 * USD, days, now)
    assert result.projected_micros == 80 * USD + 27 * 20 * USD


def test_a_projection_into_a_doubled_month_starts_from_the_ordinary_rate() -> None:
    quarterly = budget(
        "season", "10000", period="Quarterly", schedule=[{"months": [10], "multiplier": "2"}]
    )
    days = history(dt.date(2026, 9, 3), [10 * USD] * 28)  # Q3, multiplier 1
    now = at(dt.date(2026, 10, 1))  # Q4 starts: multiplier 2
    result = forecast_period(quarterly, quarterly.window(now), 20000 * USD, 0, days, now)
    assert result.projected_micros == 92 * 20 * USD


def test_today_counts_for_the_part_still_to_come() -> None:
    monthly = budget("noon", "1000")
    now = at(dt.date(2026, 11, 30), hour=12)  # the last day, half gone
    days = history(dt.date(2026, 11, 2), [10 * USD] * 28)
    result = forecast_period(monthly, monthly.window(now), 1000 * USD, 295 * USD, days, now)
    assert result.projected_micros == 300 * USD


def test_too_little_history_says_how_much_there_is() -> None:
    monthly = budget("new", "1000")
    now = at(dt.date(2026, 11, 11))
    days = history(dt.date(2026, 11, 9), [5 * USD, 5 * USD])
    result = forecast_period(monthly, monthly.window(now), 1000 * USD, 10 * USD, days, now)
    assert not result.available and result.projected_micros is None
    assert result.message == "too little history to forecast: 2 complete days with spend, 3 needed"


def test_days_before_the_budget_was_created_do_not_count() -> None:
    created = budget("young", "1000", created="2026-11-09T00:00:00Z")
    now = at(dt.date(2026, 11, 11))
    days = history(dt.date(2026, 11, 1), [5 * USD] * 10)  # spend of a scope older than it
    result = forecast_period(created, created.window(now), 1000 * USD, 50 * USD, days, now)
    assert not result.available and result.history_days == 2
