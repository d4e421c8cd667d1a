"""Instants as the project writes them: UTC, RFC 3339 to the second, or unix ms."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """The default clock; everything that needs the time takes a clock, so tests move it."""
    return dt.datetime.now(dt.UTC)


def rfc3339(instant: dt.datetime) -> str:
    """``2026-12-01T00:00:00Z``: what Kubernetes, HTTP answers and the docs show."""
    return instant.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_ms(instant: dt.datetime) -> int:
    """Milliseconds since the epoch: how the Lua scripts compare instants."""
    return int(instant.timestamp() * 1000)
