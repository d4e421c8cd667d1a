"""A sudden jump in a budget's spend: the last hour and the last day against a trailing
baseline of the same hours.

The input is settled spend per UTC hour (the ledger's hourly history, kept
``BASELINE_DAYS`` + 2 days). The baseline of a window (the 60 minutes, or the 24 hours,
before now) is the median of the same window on each of the ``BASELINE_DAYS`` days
before: a jump is measured against what these hours usually cost, so a busy morning
is not an anomaly because the nights are quiet. An hour's baseline is never taken
below half the average hour of the baseline days, so a quiet hour with a little spend
is not a "jump" either. An anomaly is a window whose spend reaches ``factor`` times its
baseline (``spec.anomaly.factor``, 10 by default).

A budget needs ``MIN_BASELINE_DAYS`` days of history (from its first hour with spend,
and not before it was created) before anything counts as an anomaly: a new budget's
first days have no "usual" to jump from. Partial hours count pro rata, as if spend were
even within an hour. Arithmetic is exact (fractions).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from budget_guard.domain.money import format_usd

BASELINE_DAYS = 7
MIN_BASELINE_DAYS = 3
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# How long the hourly history must be kept: the day window a week back, and a margin.
HOURLY_RETENTION = dt.timedelta(days=BASELINE_DAYS + 2)


@dataclass(frozen=True)
class Anomaly:
    detected: bool
    window: str = ""  # "hour" or "day" when detected
    observed_micros: int = 0
    baseline_micros: int = 0
    baseline_days: int = 0
    message: str = ""

    @property
    def enough_history(self) -> bool:
        return self.baseline_days >= MIN_BASELINE_DAYS


def hour_start(instant: dt.datetime) -> dt.datetime:
    """The UTC hour ``instant`` falls in: how hourly history is keyed."""
    return instant.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


_HOUR_US = 3_600_000_000


def _microseconds(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def window_spend(
    hours: Mapping[dt.datetime, int], start: dt.datetime, end: dt.datetime, *, live: bool
) -> Fraction:
    """Spend in [start, end): whole hours inside it, partial hours pro rata. ``live``: the
    hour holding ``end`` is the current one, whose spend so far all lies before ``end``."""
    total = 0  # micro-USD x microseconds: exact, divided once at the end
    bucket = hour_start(start)
    while bucket < end:
        spent = hours.get(bucket, 0)
        if spent:
            covered_from = max(bucket, start)
            covered_to = min(bucket + HOUR, end)
            if live and covered_to == end and bucket + HOUR > end:
                covered_to = bucket + HOUR  # the current hour: all of it so far
            total += spent * _microseconds(covered_to - covered_from)
        bucket += HOUR
    return Fraction(total, _HOUR_US)


def _median(values: list[Fraction]) -> Fraction:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def history_start(
    hours: Mapping[dt.datetime, int], created_at: dt.datetime | None
) -> dt.datetime | None:
    """Where the budget's history begins: its first hour with spend, not before creation."""
    spending = [hour for hour, spent in hours.items() if spent > 0]
    if not spending:
        return None
    first = min(spending)
    return max(first, created_at) if created_at is not None else first


def detect_anomaly(
    hours: Mapping[dt.datetime, int],
    now: dt.datetime,
    factor: int,
    created_at: dt.datetime | None = None,
) -> Anomaly:
    """Whether the last hour or the last day spent ``factor`` times its baseline."""
    begins = history_start(hours, created_at)
    usable = [
        back
        for back in range(1, BASELINE_DAYS + 1)
        if begins is not None and now - back * DAY - DAY >= begins
    ]
    if len(usable) < MIN_BASELINE_DAYS:
        return Anomaly(
            False,
            baseline_days=len(usable),
            message=f"{len(usable)} days of history; {MIN_BASELINE_DAYS} needed before a jump "
            "counts",
        )
    day_baseline = _median(
        [
            window_spend(hours, now - back * DAY - DAY, now - back * DAY, live=False)
            for back in usable
        ]
    )
    hour_baseline = max(
        _median(
            [
                window_spend(hours, now - back * DAY - HOUR, now - back * DAY, live=False)
                for back in usable
            ]
        ),
        day_baseline / 48,  # half the average hour
    )
    checks = (
        ("hour", window_spend(hours, now - HOUR, now, live=True), hour_baseline),
        ("day", window_spend(hours, now - DAY, now, live=True), day_baseline),
    )
    for window, observed, baseline in checks:
        if baseline > 0 and observed >= factor * baseline:
            ratio = observed / baseline
            return Anomaly(
                True,
                window,
                int(observed),
                int(baseline),
                len(usable),
                f"${format_usd(int(observed))} spent in the last {window}: "
                f"{int(ratio)}x the usual ${format_usd(int(baseline))} for the same "
                f"{'hour' if window == 'hour' else '24 hours'} (median of {len(usable)} days; "
                f"an anomaly from {factor}x)",
            )
    return Anomaly(
        False,
        observed_micros=int(checks[0][1]),
        baseline_micros=int(hour_baseline),
        baseline_days=len(usable),
        message=f"the last hour and day are below {factor}x their usual spend",
    )
