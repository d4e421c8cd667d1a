"""The monthly review of one budget: allocated, spent, year to date, % utilized, the
trend against the previous period, the forecast, committed use, and what to do.

Built from the ledger's daily history (``period_history``) and the period's counter,
either by the operator (which writes the figures into the budget's status) or by
``budget-guard report`` in standalone mode; the report in cluster mode reads them
back from the status. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, Protocol

from budget_guard.domain.anomaly import Anomaly, detect_anomaly
from budget_guard.domain.budget import HARD_LIMIT_PERCENT, Budget, Commitment
from budget_guard.domain.forecast import (
    LOOKBACK_DAYS,
    Forecast,
    forecast_period,
    last_local_day,
    local_day_of,
)
from budget_guard.domain.money import MICROS_PER_USD, format_usd
from budget_guard.domain.percent import percent_text
from budget_guard.domain.periods import PeriodWindow

MONITOR_PERCENT = 90  # projected (or spent, without a forecast) from here on: monitor
HISTORY_RETENTION_DAYS = 400  # the ledger's daily history (LedgerSettings.history_retention)


def review_days(budget: Budget, now: dt.datetime) -> tuple[dt.date, dt.date]:
    """The local days of history a review of ``budget`` at ``now`` reads: the year so far,
    the previous period, and the forecast's lookback (within what the ledger keeps)."""
    today = local_day_of(budget, now)
    window = budget.window(now)
    previous = previous_window(budget, window)
    first = min(
        today.replace(month=1, day=1),
        previous.first_local_day,
        today - dt.timedelta(days=LOOKBACK_DAYS),
    )
    return max(first, retained_from(today)), today


def retained_from(today: dt.date) -> dt.date:
    return today - dt.timedelta(days=HISTORY_RETENTION_DAYS - 1)


def previous_window(budget: Budget, window: PeriodWindow) -> PeriodWindow:
    return budget.window(window.start - dt.timedelta(microseconds=1))


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True)
class PeriodHistory:
    """What the review needs of the daily history, reduced to figures.

    ``days``: the current period's local days up to today, with their spend (today's so
    far). ``previous_to_date``: the previous period's first ``elapsed_days`` days, for a
    like-for-like trend; it and ``previous_spent`` are None when the ledger no longer
    keeps those days."""

    days: tuple[tuple[dt.date, int], ...]
    year_to_date: int
    previous_spent: int | None
    previous_to_date: int | None

    @property
    def elapsed_days(self) -> int:
        """Complete days of the period before today."""
        return max(0, len(self.days) - 1)

    @property
    def current_to_date(self) -> int:
        """The period's complete days before today."""
        return sum(spent for _, spent in self.days[:-1])

    @property
    def period_spent(self) -> int:
        return sum(spent for _, spent in self.days)


def period_history(budget: Budget, days: Mapping[dt.date, int], now: dt.datetime) -> PeriodHistory:
    """``days``: settled spend by local day over (at least) ``review_days``."""
    today = local_day_of(budget, now)
    window = budget.window(now)
    kept_from = retained_from(today)
    current = _days(window.first_local_day, today)
    previous = previous_window(budget, window)
    previous_days = _days(previous.first_local_day, last_local_day(previous, budget))
    like_for_like = previous_days[: len(current) - 1]
    year = _days(max(today.replace(month=1, day=1), kept_from), today)
    return PeriodHistory(
        days=tuple((day, days.get(day, 0)) for day in current),
        year_to_date=sum(days.get(day, 0) for day in year),
        previous_spent=(
            sum(days.get(day, 0) for day in previous_days)
            if previous.first_local_day >= kept_from
            else None
        ),
        previous_to_date=(
            sum(days.get(day, 0) for day in like_for_like)
            if previous.first_local_day >= kept_from
            else None
        ),
    )


@dataclass(frozen=True)
class Trend:
    """This period so far against the previous period's same days."""

    percent: int | None  # rounded; None when there is nothing to compare
    text: str  # "up 20 %", "down 5 %", "flat", "new", "n/a"


def trend(history: PeriodHistory) -> Trend:
    if history.previous_to_date is None or history.elapsed_days == 0:
        return Trend(None, "n/a")
    current, previous = history.current_to_date, history.previous_to_date
    if previous == 0:
        return Trend(None, "new" if current > 0 else "flat")
    percent = round(Fraction(current - previous, previous) * 100)
    if percent == 0:
        return Trend(0, "flat")
    return Trend(percent, f"{'up' if percent > 0 else 'down'} {abs(percent)} %")


class ActionKind(StrEnum):
    OK = "OK"
    MONITOR = "monitor"
    REQUEST = "request"
    HARD_LIMIT = "hard limit active"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    amount_micros: int = 0  # for REQUEST: the increase to ask for, whole USD

    @property
    def text(self) -> str:
        if self.kind is ActionKind.REQUEST:
            return f"request +${self.amount_micros // MICROS_PER_USD:,}"
        return self.kind.value


def _whole_usd_above(micros: int) -> int:
    return math.ceil(Fraction(micros, MICROS_PER_USD)) * MICROS_PER_USD


@dataclass(frozen=True)
class CommitmentUse:
    """Spend against a committed-use amount: what is used, what the forecast leaves."""

    commitment: Commitment
    spent_micros: int
    projected_micros: int | None

    @property
    def utilization(self) -> Fraction:
        return Fraction(self.spent_micros, self.commitment.amount_micros)

    @property
    def projected_unused_micros(self) -> int | None:
        if self.projected_micros is None:
            return None
        return max(0, self.commitment.amount_micros - self.projected_micros)

    @property
    def at_risk(self) -> bool:
        """The forecast leaves part of the commitment unused at the period's end."""
        unused = self.projected_unused_micros
        return unused is not None and unused > 0

    @property
    def discount_micros(self) -> int:
        return self.commitment.discount_micros(self.spent_micros)

    @property
    def summary(self) -> str:
        used = f"{percent_text(self.utilization)} of ${format_usd(self.commitment.amount_micros)}"
        if self.at_risk:
            return f"{used}; ${format_usd(self.projected_unused_micros or 0)} projected unused"
        return used


@dataclass(frozen=True)
class BudgetReview:
    """One row of the monthly review."""

    budget_id: str
    scope: str
    period: str
    period_key: str
    enforces: bool
    per_user: bool  # a per-user template: allocated is each user's limit
    allocated_micros: int
    spent_micros: int
    history: PeriodHistory
    forecast: Forecast | None = None
    users_exhausted: int = 0
    commitment: Commitment | None = None
    anomaly: bool = False
    limit_reached: bool = False  # the ledger reported the limit reached this period

    @property
    def utilization(self) -> Fraction | None:
        if self.per_user or not self.allocated_micros:
            return None
        return Fraction(self.spent_micros, self.allocated_micros)

    @property
    def trend(self) -> Trend:
        return trend(self.history)

    @property
    def projected_micros(self) -> int | None:
        return self.forecast.projected_micros if self.forecast is not None else None

    @property
    def commitment_use(self) -> CommitmentUse | None:
        if self.commitment is None:
            return None
        return CommitmentUse(self.commitment, self.spent_micros, self.projected_micros)

    @property
    def action(self) -> Action:
        if self.per_user:
            return Action(ActionKind.HARD_LIMIT if self.users_exhausted else ActionKind.OK)
        allocated = self.allocated_micros
        at_limit = self.limit_reached or self.spent_micros >= allocated
        if at_limit and self.enforces:
            return Action(ActionKind.HARD_LIMIT)
        expected = max(self.spent_micros, self.projected_micros or 0)
        if expected > allocated:
            return Action(ActionKind.REQUEST, _whole_usd_above(expected - allocated))
        if self.anomaly or expected * 100 >= allocated * MONITOR_PERCENT:
            return Action(ActionKind.MONITOR)
        return Action(ActionKind.OK)


def build_review(
    budget: Budget,
    days: Mapping[dt.date, int],
    now: dt.datetime,
    *,
    allocated_micros: int,
    spent_micros: int,
    users_exhausted: int = 0,
    limit_reached: bool = False,
    anomaly: bool = False,
) -> BudgetReview:
    """The review of ``budget`` at ``now``: ``days`` is its daily history over (at least)
    ``review_days``, ``spent_micros`` its counter's spend this period (a per-user template
    has none: its users' spend is summed from the history)."""
    window = budget.window(now)
    history = period_history(budget, days, now)
    per_user = budget.scope.is_user_template
    spent = history.period_spent if per_user else spent_micros
    return BudgetReview(
        budget_id=budget.id,
        scope=budget.scope.describe(),
        period=budget.period.value,
        period_key=window.key,
        enforces=budget.enforces,
        per_user=per_user,
        allocated_micros=allocated_micros,
        spent_micros=spent,
        history=history,
        forecast=None
        if per_user
        else forecast_period(budget, window, allocated_micros, spent, days, now),
        users_exhausted=users_exhausted,
        commitment=budget.commitment,
        anomaly=anomaly,
        limit_reached=limit_reached,
    )


class Counters(Protocol):
    """What a review needs of a budget's counter this period (the store's usage reads
    have it)."""

    @property
    def effective_limit(self) -> int: ...

    @property
    def spent(self) -> int: ...

    @property
    def users_exhausted(self) -> int: ...

    @property
    def reported_percent(self) -> int: ...


def review_of(
    budget: Budget,
    counters: Counters,
    days: Mapping[dt.date, int],
    hours: Mapping[dt.datetime, int],
    now: dt.datetime,
) -> tuple[BudgetReview, Anomaly]:
    """The review of ``budget`` from its counter, daily history and hourly history (spend
    per UTC hour, for the anomaly check, which it returns too)."""
    anomaly = detect_anomaly(hours, now, budget.anomaly_factor, budget.created_at)
    review = build_review(
        budget,
        days,
        now,
        allocated_micros=counters.effective_limit,
        spent_micros=counters.spent,
        users_exhausted=counters.users_exhausted,
        limit_reached=counters.reported_percent >= HARD_LIMIT_PERCENT,
        anomaly=anomaly.detected,
    )
    return review, anomaly


def review_record(review: BudgetReview) -> dict[str, Any]:
    """The review for machines (JSON reports, the read API): amounts as exact decimal
    strings of USD."""
    forecast = review.forecast
    action = review.action
    use = review.commitment_use
    utilization = review.utilization
    utilized = percent_text(utilization, unit="") if utilization is not None else None
    return {
        "budget": review.budget_id,
        "scope": review.scope,
        "period": review.period,
        "periodKey": review.period_key,
        "perUser": review.per_user,
        "allocatedUsd": format_usd(review.allocated_micros),
        "spentUsd": format_usd(review.spent_micros),
        "yearToDateUsd": format_usd(review.history.year_to_date),
        "utilizationPercent": utilized,
        "trend": review.trend.text,
        "trendPercent": review.trend.percent,
        "previousPeriodUsd": None
        if review.history.previous_spent is None
        else format_usd(review.history.previous_spent),
        "forecast": None
        if forecast is None
        else {
            "spendUsd": None
            if forecast.projected_micros is None
            else format_usd(forecast.projected_micros),
            "limitDate": forecast.limit_day.isoformat() if forecast.limit_day else None,
            "basis": forecast.basis or None,
            "message": forecast.message or None,
        },
        "action": action.text,
        "requestUsd": format_usd(action.amount_micros)
        if action.kind is ActionKind.REQUEST
        else None,
        "anomaly": review.anomaly,
        "usersExhausted": review.users_exhausted if review.per_user else None,
        "commitment": None
        if use is None
        else {
            "amountUsd": format_usd(use.commitment.amount_micros),
            "discountPercent": str(use.commitment.discount_percent),
            "utilizationPercent": percent_text(use.utilization, unit=""),
            "projectedUnusedUsd": None
            if use.projected_unused_micros is None
            else format_usd(use.projected_unused_micros),
            "discountUsd": format_usd(use.discount_micros),
        },
        "days": [
            {"day": day.isoformat(), "spentUsd": format_usd(spent)}
            for day, spent in review.history.days
        ],
    }
