"""The monthly review as one HTML file: the table, and per budget a burn-up chart as
inline SVG (spend by day, cumulative, against the limit and the forecast). No
JavaScript and nothing fetched: it opens from a file and prints."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from budget_guard.domain.review import BudgetReview
from budget_guard.reports.render import NUMBERS, notes, table_rows, usd

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 32  # margins around the plot
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }
table { border-collapse: collapse; margin-bottom: 2rem; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #d0d7de; text-align: left; }
.num { text-align: right; }
section { margin: 1.5rem 0; page-break-inside: avoid; }
.legend span { margin-right: 1.2rem; font-size: 0.85rem; }
.spent { color: #0969da; } .limit { color: #cf222e; } .forecast { color: #9a6700; }
"""


def _period_days(review: BudgetReview) -> list[dt.date]:
    days = [day for day, _ in review.history.days]
    if not days:
        return []
    forecast = review.forecast
    last = forecast.last_day if forecast is not None and forecast.last_day else days[-1]
    return [days[0] + dt.timedelta(days=n) for n in range((last - days[0]).days + 1)]


def burn_up_svg(review: BudgetReview) -> str:
    """Cumulative spend by day (solid), the limit (dashed red), and the forecast from
    today to the period's end (dashed amber)."""
    days = _period_days(review)
    if not days:
        return ""
    cumulative, running = [], 0
    for _, spent in review.history.days:
        running += spent
        cumulative.append(running)
    projected = review.projected_micros
    top = max([review.allocated_micros if not review.per_user else 0, running, projected or 0, 1])
    top = top + top // 10
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(1, len(days))

    def x(day_end: int) -> int:  # day_end: days completed since the period's start
        return LEFT + day_end * plot_w // span

    def y(micros: int) -> int:
        return TOP + plot_h - micros * plot_h // top

    spent_points = [f"{x(0)},{y(0)}"] + [
        f"{x(n + 1)},{y(value)}" for n, value in enumerate(cumulative)
    ]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f"<title>{escape(review.budget_id)}: spent by day against the limit and the "
        "forecast</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11">'
        f"{escape(usd(top))}</text>",
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">$0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 10}" font-size="11">{days[0].isoformat()}</text>',
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 10}" text-anchor="end" font-size="11">'
        f"{days[-1].isoformat()}</text>",
    ]
    if not review.per_user:
        limit_y = y(review.allocated_micros)
        parts.append(
            f'<line x1="{LEFT}" y1="{limit_y}" x2="{LEFT + plot_w}" y2="{limit_y}" '
            'stroke="#cf222e" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
    if projected is not None:
        today = len(cumulative)
        parts.append(
            f'<line x1="{x(today)}" y1="{y(running)}" x2="{x(span)}" y2="{y(projected)}" '
            'stroke="#9a6700" stroke-width="1.5" stroke-dasharray="3 3"/>'
        )
    parts.append(
        f'<polyline points="{" ".join(spent_points)}" fill="none" stroke="#0969da" '
        'stroke-width="2"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def html_document(reviews: Sequence[BudgetReview], title: str, generated: str) -> str:
    header, rows = table_rows(reviews)
    kinds = [' class="num"' if name in NUMBERS else "" for name in header]

    def row_of(tag: str, values: Sequence[str]) -> str:
        inner = "".join(
            f"<{tag}{kind}>{escape(value)}</{tag}>"
            for kind, value in zip(kinds, values, strict=True)
        )
        return f"<tr>{inner}</tr>"

    table = ["<table>", row_of("th", header), *(row_of("td", row) for row in rows), "</table>"]
    sections = []
    for review in reviews:
        forecast = review.projected_micros
        legend = [
            f'<span class="spent">&#9644; spent {escape(usd(review.spent_micros))}</span>',
            f'<span class="limit">&#9476; limit {escape(usd(review.allocated_micros))}'
            f"{'/user' if review.per_user else ''}</span>",
        ]
        if forecast is not None:
            legend.append(f'<span class="forecast">&#9476; forecast {escape(usd(forecast))}</span>')
        sections.append(
            f"<section><h2>{escape(review.budget_id)} <small>{escape(review.scope)}, "
            f"{escape(review.period_key)}: {escape(review.action.text)}</small></h2>"
            f'<div class="legend">{"".join(legend)}</div>{burn_up_svg(review)}</section>'
        )
    extra = "".join(f"<li>{escape(note)}</li>" for note in notes(reviews))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(generated)}</p>{''.join(table)}"
        f"{f'<ul>{extra}</ul>' if extra else ''}{''.join(sections)}</body></html>\n"
    )
