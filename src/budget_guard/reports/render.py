"""The monthly review written out: a text table, Markdown, CSV and JSON (HTML with its
charts is in ``reports.html``). One row per budget; money as decimal strings, never
floats."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from budget_guard.domain.money import format_usd
from budget_guard.domain.percent import percent_text
from budget_guard.domain.review import BudgetReview, review_record

COLUMNS = (
    "BUDGET",
    "SCOPE",
    "PERIOD",
    "ALLOCATED",
    "SPENT",
    "YTD",
    "UTILIZED",
    "TREND",
    "FORECAST",
    "ACTION",
)
NUMBERS = frozenset(("ALLOCATED", "SPENT", "YTD", "UTILIZED"))  # right-aligned
CSV_FIELDS = (
    "budget",
    "scope",
    "period",
    "period_key",
    "allocated_usd",
    "spent_usd",
    "year_to_date_usd",
    "utilization_percent",
    "trend",
    "trend_percent",
    "forecast_usd",
    "forecast_limit_date",
    "action",
    "request_usd",
    "anomaly",
    "commitment_usd",
    "commitment_utilization_percent",
    "commitment_projected_unused_usd",
)


def usd(micros: int) -> str:
    """``1234500000`` -> ``$1,234.50``."""
    whole, _, fraction = format_usd(micros).partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${int(whole.lstrip('-')):,}.{fraction}"


def forecast_text(review: BudgetReview) -> str:
    forecast = review.forecast
    if review.per_user:
        return "per user"
    if forecast is None or forecast.projected_micros is None:
        return "n/a"
    text = usd(forecast.projected_micros)
    if forecast.limit_day is not None and review.spent_micros < review.allocated_micros:
        text += f" (limit {forecast.limit_day.isoformat()})"
    return text


def cells(review: BudgetReview) -> dict[str, str]:
    """The table's cells for one budget, as people read them."""
    utilization = review.utilization
    allocated = usd(review.allocated_micros) + ("/user" if review.per_user else "")
    return {
        "BUDGET": review.budget_id,
        "SCOPE": review.scope,
        "PERIOD": review.period_key,
        "ALLOCATED": allocated,
        "SPENT": usd(review.spent_micros),
        "YTD": usd(review.history.year_to_date),
        "UTILIZED": percent_text(utilization) if utilization is not None else "-",
        "TREND": review.trend.text,
        "FORECAST": forecast_text(review),
        "ACTION": review.action.text,
    }


def commitment_cell(review: BudgetReview) -> str:
    use = review.commitment_use
    return use.summary if use is not None else "-"


def _with_commitments(reviews: Sequence[BudgetReview]) -> bool:
    return any(review.commitment is not None for review in reviews)


def table_rows(reviews: Sequence[BudgetReview]) -> tuple[list[str], list[list[str]]]:
    header = list(COLUMNS)
    commitments = _with_commitments(reviews)
    if commitments:
        header.append("COMMITMENT")
    rows = []
    for review in reviews:
        row = list(cells(review).values())
        if commitments:
            row.append(commitment_cell(review))
        rows.append(row)
    return header, rows


def notes(reviews: Sequence[BudgetReview]) -> list[str]:
    """What the table cannot say in a cell: why a forecast is missing, anomalies."""
    said = []
    for review in reviews:
        forecast = review.forecast
        if forecast is not None and not forecast.available:
            said.append(f"{review.budget_id}: {forecast.message}")
        if review.anomaly:
            said.append(f"{review.budget_id}: spend jumped (AnomalyDetected)")
    return said


def text_table(reviews: Sequence[BudgetReview]) -> str:
    header, rows = table_rows(reviews)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    extra = notes(reviews)
    return "\n".join(lines + (["", *extra] if extra else [])) + "\n"


def markdown(reviews: Sequence[BudgetReview], title: str) -> str:
    header, rows = table_rows(reviews)

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    aligned = ["---:" if name in NUMBERS else "---" for name in header]
    body = [f"# {title}", "", line(header), "| " + " | ".join(aligned) + " |"]
    body += [line(row) for row in rows]
    extra = notes(reviews)
    if extra:
        body += ["", *(f"- {note}" for note in extra)]
    return "\n".join(body) + "\n"


def json_document(reviews: Sequence[BudgetReview], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "budgets": [review_record(r) for r in reviews]}, indent=2) + "\n"


def csv_text(reviews: Sequence[BudgetReview]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for review in reviews:
        data = review_record(review)
        forecast = data["forecast"] or {}
        commitment = data["commitment"] or {}
        writer.writerow(
            [
                data["budget"],
                data["scope"],
                data["period"],
                data["periodKey"],
                data["allocatedUsd"],
                data["spentUsd"],
                data["yearToDateUsd"],
                data["utilizationPercent"] or "",
                data["trend"],
                "" if data["trendPercent"] is None else data["trendPercent"],
                forecast.get("spendUsd") or "",
                forecast.get("limitDate") or "",
                data["action"],
                data["requestUsd"] or "",
                "true" if data["anomaly"] else "false",
                commitment.get("amountUsd", ""),
                commitment.get("utilizationPercent", ""),
                commitment.get("projectedUnusedUsd") or "",
            ]
        )
    return out.getvalue()
