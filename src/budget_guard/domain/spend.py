"""Attributed spend: the ledger's daily attribution, grouped for chargeback.

Every settled request adds its cost to one cell per UTC day: (tenant, feature, model),
kept as long as the daily history (13 months), and (tenant, feature, model, user), kept
for the per-user window (35 days by default). ``group_spend`` sums cells by the
dimensions asked for; ``DayRange`` is the period asked for, parsed with messages that
name the option. Used by ``budget-guard export``, ``GET /v1/spend`` and the simulator.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

DIMENSIONS = ("tenant", "feature", "model", "user", "day")
DEFAULT_GROUP_BY = ("tenant", "feature", "model")
MAX_RANGE_DAYS = 800  # twice what the ledger keeps: a typo (20266-...) is an error
_DATE = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


class SpendQueryError(ValueError):
    """A malformed period or grouping; the message names the option and what to write."""


@dataclass(frozen=True)
class DayRange:
    """UTC days from ``first`` to ``last``, both included."""

    first: dt.date
    last: dt.date

    @classmethod
    def parse(
        cls, start: str | None, end: str | None, names: tuple[str, str] = ("--from", "--to")
    ) -> DayRange:
        """``2026-11-01`` or a whole month ``2026-11`` (from its first day, to its last)."""
        first = _parse_day(start, names[0], first_of_month=True)
        last = _parse_day(end, names[1], first_of_month=False)
        if first > last:
            raise SpendQueryError(
                f"{names[0]} {first.isoformat()} is after {names[1]} {last.isoformat()}: "
                "the range runs from the earlier day to the later one"
            )
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise SpendQueryError(
                f"{names[0]}..{names[1]}: at most {MAX_RANGE_DAYS} days at a time (the ledger "
                f"keeps about 400), got {(last - first).days + 1}"
            )
        return cls(first, last)

    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def __str__(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


def _parse_day(text: str | None, name: str, *, first_of_month: bool) -> dt.date:
    if text is None or not text.strip():
        raise SpendQueryError(f"{name} is required: a day like 2026-11-01 or a month like 2026-11")
    match = _DATE.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError(text)
        year, month, day = int(match[1]), int(match[2]), match[3]
        if day is not None:
            return dt.date(year, month, int(day))
        start = dt.date(year, month, 1)
    except ValueError:
        raise SpendQueryError(
            f"{name}: {text!r} is not a day like 2026-11-01 or a month like 2026-11"
        ) from None
    if first_of_month:
        return start
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return following - dt.timedelta(days=1)


def parse_group_by(text: str | None, name: str = "--group-by") -> tuple[str, ...]:
    """``tenant,model`` -> ``("tenant", "model")``; unset: tenant, feature, model."""
    if text is None or not text.strip():
        return DEFAULT_GROUP_BY
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in DIMENSIONS]
    if unknown or not chosen:
        raise SpendQueryError(
            f"{name}: unknown dimension {unknown[0] if unknown else text!r}; use a comma-separated "
            f"list of {', '.join(DIMENSIONS)}"
        )
    if len(set(chosen)) != len(chosen):
        raise SpendQueryError(f"{name}: each dimension at most once, got {text!r}")
    return chosen


class SpendCell(NamedTuple):  # a million in a 13-month export: a NamedTuple is cheap
    """One cell of the attribution: a UTC day and who spent (user None: not recorded)."""

    day: dt.date
    tenant: str | None
    feature: str | None
    model: str | None
    user: str | None
    cost_micros: int
    requests: int


@dataclass(frozen=True, slots=True)
class SpendRow:
    """A group's total: ``group`` holds the values of the dimensions grouped by."""

    group: tuple[str, ...]
    cost_micros: int
    requests: int


class SpendTotals:
    """Totals per group, added to as cells are read: an export of thirteen months never
    holds every cell at once."""

    def __init__(self, group_by: Sequence[str]) -> None:
        self.group_by = tuple(group_by)
        self._totals: dict[tuple[Any, ...], list[int]] = {}
        places = [SpendCell._fields.index(dimension) for dimension in self.group_by]
        self._key: Callable[[SpendCell], tuple[Any, ...]] = (
            (lambda cell: (cell[places[0]],)) if len(places) == 1 else itemgetter(*places)
        )

    def add(self, cells: Iterable[SpendCell]) -> None:
        totals, key_of = self._totals, self._key
        for cell in cells:
            key = key_of(cell)
            total = totals.get(key)
            if total is None:
                totals[key] = [cell.cost_micros, cell.requests]
            else:
                total[0] += cell.cost_micros
                total[1] += cell.requests

    def rows(self) -> list[SpendRow]:
        """Sorted by group values; days as YYYY-MM-DD, values not recorded as ""."""
        rows = [
            SpendRow(tuple(_text(value) for value in key), cost, count)
            for key, (cost, count) in self._totals.items()
        ]
        return sorted(rows, key=lambda row: row.group)


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def group_spend(cells: Iterable[SpendCell], group_by: Sequence[str]) -> list[SpendRow]:
    """Totals per group, sorted by group values."""
    totals = SpendTotals(group_by)
    totals.add(cells)
    return totals.rows()
