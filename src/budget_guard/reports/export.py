"""``budget-guard export``: the chargeback data, attributed spend grouped by tenant,
feature, model, user and day, as CSV or JSON lines; or, with ``--requests``, the
settled requests themselves from the bounded stream (recent spend, for audits)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from budget_guard.domain.money import format_usd
from budget_guard.domain.spend import DayRange, SpendRow
from budget_guard.reports.outcome import Exit, ReportError
from budget_guard.store.history import AttributedTotals, SettledRequest


def _span(days: Sequence[object]) -> str:
    ordered = sorted(str(day) for day in days)
    return ordered[0] if len(ordered) == 1 else f"{ordered[0]}..{ordered[-1]}"


def checked_rows(
    found: AttributedTotals, period: DayRange, tenants: frozenset[str] | None
) -> list[SpendRow]:
    """The grouped rows, or a ``ReportError``: nothing recorded, an unknown tenant, or
    per-user detail asked for days that no longer have it."""
    missing = sorted((tenants or frozenset()) - found.tenants)
    if missing:
        raise ReportError(
            Exit.UNKNOWN,
            f"unknown tenant {missing[0]!r}: no spend recorded for it from {period.first} "
            f"to {period.last}",
        )
    if not found.days_with_spend:
        raise ReportError(
            Exit.NO_DATA,
            f"no spend recorded from {period.first} to {period.last} (UTC days"
            f"{', for these tenants' if tenants else ''})",
        )
    if found.days_without_users:
        raise ReportError(
            Exit.NO_DATA,
            f"per-user detail is no longer kept for {_span(sorted(found.days_without_users))}"
            " (it is kept for the per-user window, 35 days by default): group without user, "
            "or export per-user spend every day to keep it (docs/reports.md)",
        )
    return found.rows


def spend_records(rows: Sequence[SpendRow], group_by: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {
            **dict(zip(group_by, row.group, strict=True)),
            "requests": row.requests,
            "cost_usd": format_usd(row.cost_micros),
            "cost_micros": row.cost_micros,
        }
        for row in rows
    ]


def write_records(records: Sequence[dict[str, Any]], fields: Sequence[str], style: str) -> str:
    out = io.StringIO()
    if style == "jsonl":
        for item in records:
            out.write(json.dumps(item, separators=(",", ":")) + "\n")
        return out.getvalue()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for item in records:
        writer.writerow({k: "" if v is None else v for k, v in item.items()})
    return out.getvalue()


REQUEST_FIELDS = (
    "at",
    "request_id",
    "tenant",
    "user",
    "feature",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cost_micros",
    "budgets",
    "source",
    "replaces_usd",
)


def request_records(requests: Sequence[SettledRequest]) -> list[dict[str, Any]]:
    return [
        {
            "at": request.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": request.request_id,
            "tenant": request.tenant,
            "user": request.user,
            "feature": request.feature,
            "model": request.model,
            "input_tokens": request.input_tokens,
            "output_tokens": request.output_tokens,
            "cost_usd": format_usd(request.cost_micros),
            "cost_micros": request.cost_micros,
            "budgets": ",".join(request.budgets),
            "source": request.source,
            "replaces_usd": None
            if request.replaces_micros is None
            else format_usd(request.replaces_micros),
        }
        for request in requests
    ]
