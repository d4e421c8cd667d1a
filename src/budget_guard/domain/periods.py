"""Budget periods: calendar-aligned windows in the budget's own IANA time zone.

For any instant, ``period_window`` gives the period's key (``2026-11-28``,
``2026-W48``, ``2026-11``, ``2026-Q4``, ``2026``) and its [start, end) as UTC
instants. A period starts at the first instant of its first local day: local
midnight, or, where a DST gap swallows midnight, the instant the clocks jump.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Period(StrEnum):
    DAILY = "Daily"
    WEEKLY = "Weekly"  # ISO weeks, starting on Monday
    MONTHLY = "Monthly"
    QUARTERLY = "Quarterly"
    YEARLY = "Yearly"


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One period: its key and its [start, end) as UTC instants."""

    key: str
    start: dt.datetime
    end: dt.datetime
    first_local_day: dt.date

    def contains(self, instant: dt.datetime) -> bool:
        return self.start <= instant < self.end

    def seconds_until_end(self, instant: dt.datetime) -> int:
        """Whole seconds from ``instant`` to the reset, rounded up (a Retry-After value)."""
        remaining = self.end - instant
        whole = remaining.days * 86_400 + remaining.seconds
        return max(0, whole + (1 if remaining.microseconds else 0))


def load_zone(name: str, field: str = "timeZone") -> ZoneInfo:
    """The IANA zone called ``name``; a ``ValueError`` naming ``field`` if there is none."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{field}: {name!r} is not an IANA time zone name like 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"{field}: unknown IANA time zone {name!r} (use a name like 'Europe/Berlin' or 'UTC')"
        ) from None


def _first_instant(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    # fold=0 gives the earlier reading: an ambiguous midnight is its first occurrence,
    # and a midnight inside a DST gap maps to the instant the gap begins.
    local_midnight = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    return local_midnight.astimezone(dt.UTC)


def _bounds(period: Period, day: dt.date) -> tuple[str, dt.date, dt.date]:
    """The period's key, first local day, and first local day of the next period."""
    if period is Period.DAILY:
        return day.isoformat(), day, day + dt.timedelta(days=1)
    if period is Period.WEEKLY:
        iso_year, iso_week, iso_weekday = day.isocalendar()
        monday = day - dt.timedelta(days=iso_weekday - 1)
        return f"{iso_year}-W{iso_week:02d}", monday, monday + dt.timedelta(days=7)
    if period is Period.MONTHLY:
        first = day.replace(day=1)
        following = _add_months(first, 1)
        return f"{day.year}-{day.month:02d}", first, following
    if period is Period.QUARTERLY:
        quarter = (day.month - 1) // 3 + 1
        first = dt.date(day.year, 3 * quarter - 2, 1)
        return f"{day.year}-Q{quarter}", first, _add_months(first, 3)
    first = dt.date(day.year, 1, 1)
    return f"{day.year}", first, dt.date(day.year + 1, 1, 1)


def _add_months(first_of_month: dt.date, months: int) -> dt.date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def period_window(period: Period, zone: ZoneInfo, instant: dt.datetime) -> PeriodWindow:
    """The window of ``period`` in ``zone`` that contains ``instant`` (timezone-aware)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    local_day = instant.astimezone(zone).date()
    key, first_day, next_first_day = _bounds(period, local_day)
    start = _first_instant(first_day, zone)
    if instant.astimezone(dt.UTC) < start:
        # Only possible when a DST gap swallows local midnight and the instant's local
        # date reads as the new day before the jump; it belongs to the previous period.
        key, first_day, next_first_day = _bounds(period, first_day - dt.timedelta(days=1))
        start = _first_instant(first_day, zone)
    return PeriodWindow(
        key=key,
        start=start,
        end=_first_instant(next_first_day, zone),
        first_local_day=first_day,
    )
