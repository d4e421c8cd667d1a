"""Anomalies: a 10x jump against the same hours of the trailing days raises one; noisy
but normal traffic, quiet hours and a new budget's first days do not."""

from __future__ import annotations

import datetime as dt
import random

from budget_guard.domain.anomaly import detect_anomaly, hour_start

USD = 1_000_000
NOW = dt.datetime(2026, 11, 20, 14, 30, tzinfo=dt.UTC)


def daily_shape(hour: int) -> int:
    """Office hours spend, nights a little."""
    return 4 * USD if 8 <= hour < 18 else USD // 4


def steady(days: int, noise: float = 0.0, seed: int = 7) -> dict[dt.datetime, int]:
    rng = random.Random(seed)
    hours: dict[dt.datetime, int] = {}
    start = hour_start(NOW) - dt.timedelta(days=days)
    hour = start
    while hour < hour_start(NOW):
        base = daily_shape(hour.hour)
        hours[hour] = int(base * (1 + rng.uniform(-noise, noise)))
        hour += dt.timedelta(hours=1)
    hours[hour_start(NOW)] = daily_shape(NOW.hour) // 2  # half of the current hour so far
    return hours


def test_a_tenfold_hour_is_an_anomaly() -> None:
    hours = steady(8)
    hours[hour_start(NOW)] = 40 * USD  # the usual hour is $4: $40 in half an hour
    found = detect_anomaly(hours, NOW, factor=10)
    assert found.detected and found.window == "hour"
    assert found.baseline_days == 7
    assert "in the last hour" in found.message and "an anomaly from 10x" in found.message


def test_the_factor_is_the_budgets_own() -> None:
    hours = steady(8)
    hours[hour_start(NOW)] = 25 * USD
    assert not detect_anomaly(hours, NOW, factor=10).detected
    assert detect_anomaly(hours, NOW, factor=5).detected


def test_noisy_but_normal_traffic_is_not_an_anomaly() -> None:
    for seed in range(20):
        hours = steady(8, noise=0.8, seed=seed)
        assert not detect_anomaly(hours, NOW, factor=10).detected, seed


def test_a_quiet_hour_with_a_little_spend_is_not_a_jump() -> None:
    night = dt.datetime(2026, 11, 20, 3, 30, tzinfo=dt.UTC)
    hours = {h: v for h, v in steady(8).items() if h < hour_start(night)}
    hours[hour_start(night)] = 2 * USD  # 8x the night's usual $0.25, below half an average hour
    assert not detect_anomaly(hours, night, factor=10).detected


def test_a_new_budget_has_no_usual_to_jump_from() -> None:
    hours = steady(2)
    hours[hour_start(NOW)] = 400 * USD
    found = detect_anomaly(hours, NOW, factor=10)
    assert not found.detected and not found.enough_history
    assert found.message == "1 days of history; 3 needed before a jump counts"


def test_history_from_before_the_budget_existed_does_not_count() -> None:
    hours = steady(8)
    hours[hour_start(NOW)] = 400 * USD
    created = NOW - dt.timedelta(days=2)
    assert not detect_anomaly(hours, NOW, factor=10, created_at=created).detected


def test_a_day_ten_times_the_usual_day_is_an_anomaly() -> None:
    hours = steady(8)
    for back in range(1, 24):  # every hour of the last day at 12x its usual
        hour = hour_start(NOW) - dt.timedelta(hours=back)
        hours[hour] = daily_shape(hour.hour) * 12
    hours[hour_start(NOW)] = 0
    found = detect_anomaly(hours, NOW, factor=10)
    assert found.detected and found.window == "day"
