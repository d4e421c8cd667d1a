"""The end of the period, projected from the burn rate: weekday-shaped, trend-aware and
seasonal.

The input is settled spend per local day (the ledger's daily history) and the spend of
the period so far; the output is the spend projected at the period's end and the local
day on which the limit would be reached. The method, in order (``docs/reports.md`` says
it in words):

1. **History**: the complete local days before today, at most ``LOOKBACK_DAYS``, from
   the first day with spend (and not before the budget was created). Fewer than
   ``MIN_HISTORY_DAYS``: no forecast, and a message saying so.
2. **Seasonal schedule**: each day's spend is divided by the multiplier
   ``spec.schedule`` gives its period, and projections are multiplied by the multiplier
   of the day projected: a schedule that doubles December's limit expects December to
   spend twice November's rate.
3. **Weekdays**: with at least ``WEEKDAY_DAYS`` of history, each weekday's mean over the
   mean of all days is its factor; days are divided by it before the trend is fitted
   and projections multiplied by it.
4. **Trend**: with at least ``TREND_DAYS``, a least-squares line through the adjusted
   days; with fewer, their mean.
5. **Projection**: each day left is the line at that day x its weekday factor x its
   multiplier, never below zero; today counts for the part of it still to come.

Arithmetic is exact (fractions) and floored to whole micro-USD at the end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from budget_guard.domain.budget import Budget
from budget_guard.domain.percent import percent_text
from budget_guard.domain.periods import PeriodWindow

LOOKBACK_DAYS = 28
MIN_HISTORY_DAYS = 3
WEEKDAY_DAYS = 14
TREND_DAYS = 7


@dataclass(frozen=True)
class Forecast:
    """A projection of the current period; ``projected_micros`` is None when there is too
    little history (``message`` says how much there is)."""

    projected_micros: int | None
    limit_micros: int
    limit_day: dt.date | None = None  # the local day the limit is projected to be reached
    last_day: dt.date | None = None  # the period's last local day
    history_days: int = 0
    basis: str = ""
    message: str = ""

    @property
    def available(self) -> bool:
        return self.projected_micros is not None

    @property
    def reaches_limit(self) -> bool:
        """Projected to reach the limit (where requests are denied) by the period's end."""
        return self.projected_micros is not None and self.projected_micros >= self.limit_micros

    @property
    def days_left_at_limit(self) -> int | None:
        """Whole days between the projected limit day and the period's last day."""
        if self.limit_day is None or self.last_day is None:
            return None
        return (self.last_day - self.limit_day).days


def last_local_day(window: PeriodWindow, budget: Budget) -> dt.date:
    return (window.end - dt.timedelta(microseconds=1)).astimezone(budget.zone).date()


def local_day_of(budget: Budget, instant: dt.datetime) -> dt.date:
    """The budget's local day at ``instant``: how its history is keyed."""
    return instant.astimezone(budget.zone).date()


def _first_instant(budget: Budget, day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=budget.zone).astimezone(dt.UTC)


_ONE = Fraction(1)


class _Multipliers:
    """The seasonal multiplier of each local day, computed once per day asked."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._known: dict[dt.date, Fraction] = {}

    def __call__(self, day: dt.date) -> Fraction:
        if not self._budget.schedule:
            return _ONE
        known = self._known.get(day)
        if known is None:
            noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=self._budget.zone)
            window = self._budget.window(noon)
            known = self._known[day] = Fraction(self._budget.multiplier_for(window))
        return known


def history_window(budget: Budget, days: Mapping[dt.date, int], today: dt.date) -> list[dt.date]:
    """The complete days the forecast learns from (oldest first)."""
    earliest = today - dt.timedelta(days=LOOKBACK_DAYS)
    if budget.created_at is not None:
        earliest = max(earliest, local_day_of(budget, budget.created_at))
    spending = [day for day, spent in days.items() if spent > 0 and earliest <= day < today]
    if not spending:
        return []
    first = min(spending)
    return [first + dt.timedelta(days=n) for n in range((today - first).days)]


@dataclass(frozen=True)
class _Model:
    """The fitted burn rate: ``level + slope * x`` per adjusted day, x counted from the
    first history day; ``weekday`` factors by ISO weekday (1-7)."""

    level: Fraction
    slope: Fraction
    weekday: Mapping[int, Fraction]

    def day(self, x: int, weekday: int, multiplier: Fraction) -> Fraction:
        value = (self.level + self.slope * x) * self.weekday.get(weekday, Fraction(1))
        return max(Fraction(0), value) * multiplier


def _fit(history: list[tuple[dt.date, Fraction]]) -> _Model:
    """``history``: (day, spend divided by its multiplier), oldest first."""
    values = [value for _, value in history]
    count = len(values)
    mean = sum(values, Fraction(0)) / count
    factors: dict[int, Fraction] = {}
    if count >= WEEKDAY_DAYS and mean > 0:
        by_weekday: dict[int, list[Fraction]] = {}
        for day, value in history:
            by_weekday.setdefault(day.isoweekday(), []).append(value)
        factors = {
            weekday: (sum(group, Fraction(0)) / len(group)) / mean
            for weekday, group in by_weekday.items()
        }
    points = [
        (x, value / factors.get(day.isoweekday(), Fraction(1)))
        for x, (day, value) in enumerate(history)
        if factors.get(day.isoweekday(), Fraction(1)) != 0
    ]
    if count < TREND_DAYS or len(points) < 2:
        level = sum((y for _, y in points), Fraction(0)) / max(1, len(points))
        return _Model(level, Fraction(0), factors)
    n = len(points)
    sum_x = sum(x for x, _ in points)
    sum_y = sum((y for _, y in points), Fraction(0))
    sum_xy = sum((x * y for x, y in points), Fraction(0))
    sum_xx = sum(x * x for x, _ in points)
    denominator = n * sum_xx - sum_x * sum_x
    slope = (n * sum_xy - sum_x * sum_y) / denominator if denominator else Fraction(0)
    level = (sum_y - slope * sum_x) / n
    return _Model(level, slope, factors)


def _basis(count: int, model: _Model, today_x: int) -> str:
    parts = [f"{count} days"]
    if any(factor != 1 for factor in model.weekday.values()):
        parts.append("weekday-shaped")
    if model.slope:
        today_level = model.level + model.slope * today_x
        if today_level > 0:
            direction = "rising" if model.slope > 0 else "falling"
            parts.append(f"{direction} {percent_text(abs(model.slope) / today_level)}/day")
    return ", ".join(parts)


def forecast_period(
    budget: Budget,
    window: PeriodWindow,
    limit_micros: int,
    spent_micros: int,
    days: Mapping[dt.date, int],
    now: dt.datetime,
) -> Forecast:
    """The projection of ``window`` (the period containing ``now``) for ``budget``.

    ``days``: settled spend by local day, covering at least the ``LOOKBACK_DAYS`` before
    today (a missing day spent nothing); ``spent_micros``: the period's spend so far.
    """
    today = local_day_of(budget, now)
    last_day = last_local_day(window, budget)
    history = history_window(budget, days, today)
    if len(history) < MIN_HISTORY_DAYS:
        return Forecast(
            None,
            limit_micros,
            last_day=last_day,
            history_days=len(history),
            message=f"too little history to forecast: {len(history)} complete day"
            f"{'' if len(history) == 1 else 's'} with spend, {MIN_HISTORY_DAYS} needed",
        )
    multiplier = _Multipliers(budget)
    model = _fit([(day, Fraction(days.get(day, 0)) / multiplier(day)) for day in history])
    first = history[0]
    tomorrow = _first_instant(budget, today + dt.timedelta(days=1))
    today_start = _first_instant(budget, today)
    left_today = Fraction(
        _microseconds(tomorrow - max(now, today_start)), _microseconds(tomorrow - today_start)
    )
    cumulative = Fraction(spent_micros)
    limit_day: dt.date | None = None
    day = today
    while day <= last_day:
        expected = model.day((day - first).days, day.isoweekday(), multiplier(day))
        cumulative += expected * left_today if day == today else expected
        if limit_day is None and spent_micros < limit_micros and cumulative >= limit_micros:
            limit_day = day
        day += dt.timedelta(days=1)
    return Forecast(
        projected_micros=int(cumulative),  # floor: both are non-negative
        limit_micros=limit_micros,
        limit_day=limit_day,
        last_day=last_day,
        history_days=len(history),
        basis=_basis(len(history), model, (today - first).days),
    )


def _microseconds(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
