"""Period windows: examples, then properties across awkward zones (hypothesis)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_guard.domain.periods import Period, load_zone, period_window

UTC = dt.UTC

# Half- and quarter-hour offsets, 30-minute DST (Lord Howe), DST changes at
# midnight (Santiago, Havana, Asuncion), southern-hemisphere DST, the date line.
AWKWARD_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "America/Havana",
    "America/Asuncion",
    "America/St_Johns",
    "Pacific/Apia",
    "Pacific/Kiritimati",
]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("period", "zone", "instant", "key", "start", "end"),
    [
        (
            Period.DAILY,
            "UTC",
            "2026-11-28T12:00:00+00:00",
            "2026-11-28",
            "2026-11-28T00:00:00+00:00",
            "2026-11-29T00:00:00+00:00",
        ),
        (
            Period.DAILY,
            "Europe/Berlin",
            "2026-11-28T23:30:00+00:00",
            "2026-11-29",
            "2026-11-28T23:00:00+00:00",
            "2026-11-29T23:00:00+00:00",
        ),
        # Berlin springs forward on 2026-03-29: that day is 23 hours long.
        (
            Period.DAILY,
            "Europe/Berlin",
            "2026-03-29T12:00:00+00:00",
            "2026-03-29",
            "2026-03-28T23:00:00+00:00",
            "2026-03-29T22:00:00+00:00",
        ),
        (
            Period.WEEKLY,
            "UTC",
            "2026-11-28T12:00:00+00:00",
            "2026-W48",
            "2026-11-23T00:00:00+00:00",
            "2026-11-30T00:00:00+00:00",
        ),
        # ISO week 53: 2026 has one (Dec 31, 2026 is a Thursday) and it runs into 2027.
        (
            Period.WEEKLY,
            "UTC",
            "2027-01-02T10:00:00+00:00",
            "2026-W53",
            "2026-12-28T00:00:00+00:00",
            "2027-01-04T00:00:00+00:00",
        ),
        (
            Period.MONTHLY,
            "Asia/Kolkata",
            "2026-11-30T19:00:00+00:00",
            "2026-12",
            "2026-11-30T18:30:00+00:00",
            "2026-12-31T18:30:00+00:00",
        ),
        (
            Period.MONTHLY,
            "UTC",
            "2028-02-29T23:59:59+00:00",
            "2028-02",
            "2028-02-01T00:00:00+00:00",
            "2028-03-01T00:00:00+00:00",
        ),
        (
            Period.QUARTERLY,
            "America/New_York",
            "2026-10-01T03:59:59+00:00",
            "2026-Q3",
            "2026-07-01T04:00:00+00:00",
            "2026-10-01T04:00:00+00:00",
        ),
        (
            Period.YEARLY,
            "Pacific/Kiritimati",
            "2026-12-31T10:00:00+00:00",
            "2027",
            "2026-12-31T10:00:00+00:00",
            "2027-12-31T10:00:00+00:00",
        ),
        # Santiago's clocks jump from 24:00 to 01:00 on 2026-09-06: the day starts at the jump.
        (
            Period.DAILY,
            "America/Santiago",
            "2026-09-06T04:30:00+00:00",
            "2026-09-06",
            "2026-09-06T04:00:00+00:00",
            "2026-09-07T03:00:00+00:00",
        ),
    ],
)
def test_known_windows(
    period: Period, zone: str, instant: str, key: str, start: str, end: str
) -> None:
    window = period_window(period, ZoneInfo(zone), at(instant))
    assert (window.key, window.start, window.end) == (key, at(start), at(end))


def test_rollover_exactly_at_the_boundary_in_a_non_utc_zone() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    boundary = at("2026-11-30T18:30:00+00:00")  # local midnight, Dec 1
    before = period_window(Period.MONTHLY, zone, boundary - dt.timedelta(microseconds=1))
    after = period_window(Period.MONTHLY, zone, boundary)
    assert (before.key, after.key) == ("2026-11", "2026-12")
    assert before.end == after.start == boundary


def test_seconds_until_end_rounds_up() -> None:
    window = period_window(Period.DAILY, ZoneInfo("UTC"), at("2026-11-28T23:59:59.5+00:00"))
    assert window.seconds_until_end(at("2026-11-28T23:59:59.5+00:00")) == 1
    assert window.seconds_until_end(at("2026-11-28T21:00:00+00:00")) == 3 * 3600


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "Europe/Berlinn"])
def test_unknown_zones_are_rejected_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match=r"^spec\.timeZone: "):
        load_zone(name, "spec.timeZone")


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_window(Period.DAILY, ZoneInfo("UTC"), dt.datetime(2026, 1, 1))


instants = st.datetimes(
    min_value=dt.datetime(1995, 1, 1),
    max_value=dt.datetime(2045, 12, 31),
    timezones=st.just(UTC),
)


@settings(max_examples=400, deadline=None)
@given(
    instant=instants,
    zone_name=st.sampled_from(AWKWARD_ZONES),
    period=st.sampled_from(list(Period)),
)
def test_window_properties(instant: dt.datetime, zone_name: str, period: Period) -> None:
    zone = ZoneInfo(zone_name)
    window = period_window(period, zone, instant)
    assert window.start <= instant < window.end
    # Windows tile time: the next one starts where this one ends, the previous ends at start.
    following = period_window(period, zone, window.end)
    previous = period_window(period, zone, window.start - dt.timedelta(microseconds=1))
    assert following.start == window.end
    assert following.key != window.key
    assert previous.end == window.start
    # Every instant of the window has the same key; the start is a local day's first instant.
    assert period_window(period, zone, window.start).key == window.key
    assert period_window(period, zone, window.end - dt.timedelta(microseconds=1)).key == window.key
    first_local = window.start.astimezone(zone)
    assert first_local.date() == window.first_local_day
    just_before = (window.start - dt.timedelta(microseconds=1)).astimezone(zone)
    assert just_before.date() < first_local.date()
    hours = (window.end - window.start).total_seconds() / 3600
    expected_days = {
        Period.DAILY: (1, 1),
        Period.WEEKLY: (7, 7),
        Period.MONTHLY: (28, 31),
        Period.QUARTERLY: (89, 92),
        Period.YEARLY: (365, 366),
    }[period]
    # DST moves a boundary by at most a day's worth on Samoa's 2011 date-line jump.
    assert expected_days[0] * 24 - 25 <= hours <= expected_days[1] * 24 + 2


@settings(max_examples=200, deadline=None)
@given(year=st.integers(min_value=1995, max_value=2045))
def test_iso_week_keys_match_the_calendar(year: int) -> None:
    december_28 = dt.datetime(year, 12, 28, 12, tzinfo=UTC)  # always in the last ISO week
    window = period_window(Period.WEEKLY, ZoneInfo("UTC"), december_28)
    weeks_in_year = dt.date(year, 12, 28).isocalendar().week
    assert window.key == f"{year}-W{weeks_in_year:02d}"
    assert weeks_in_year in (52, 53)
