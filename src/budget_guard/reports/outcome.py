"""How the report commands end: exit codes scripts can rely on (``docs/reports.md``)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    USAGE = 2  # a malformed option or input: a date range, a grouping, a budget file
    BLOCKED = 3  # simulate: a --must-not-block tenant would have been blocked
    NO_DATA = 4  # nothing recorded for what was asked (or no longer kept)
    UNKNOWN = 5  # a named tenant has no spend recorded in the period
    UNAVAILABLE = 6  # the ledger or the cluster cannot be read


class ReportError(Exception):
    """Stops a report command with ``code`` and a message for people."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
