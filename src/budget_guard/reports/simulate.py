"""``budget-guard simulate``: the replay's verdicts written out, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction

from budget_guard.domain.instants import rfc3339
from budget_guard.domain.money import format_usd
from budget_guard.domain.spend import DayRange
from budget_guard.domain.whatif import PeriodOutcome, Simulation
from budget_guard.reports.render import usd


def _micros(value: Fraction) -> int:
    return int(value)  # the replay's shares are exact: floor to whole micro-USD


def verdict(outcome: PeriodOutcome) -> str:
    if outcome.blocked_at is None:
        return "within limit"
    when = rfc3339(outcome.blocked_at)
    return f"blocked from {when}" if outcome.blocks else f"would deny from {when} (Observe)"


def simulation_text(
    result: Simulation, period: DayRange, budgets: int, notes: Sequence[str]
) -> str:
    header = ("BUDGET", "PERIOD", "RECORDED", "LIMIT", "VERDICT", "DENIED")
    rows = [
        (
            outcome.label,
            outcome.period_key,
            usd(_micros(outcome.recorded)),
            usd(outcome.limit_micros),
            verdict(outcome),
            usd(_micros(outcome.denied)),
        )
        for outcome in result.outcomes
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        f"Replay of {period.first}..{period.last} (UTC days) against {budgets} proposed "
        f"budget{'s' if budgets != 1 else ''}: {usd(_micros(result.recorded))} recorded.",
        "",
    ]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.append("")
    if result.tenants_blocked:
        lines.append("Tenants that would have been blocked:")
        for tenant in sorted(result.tenants_blocked.values(), key=lambda t: t.first_blocked_at):
            lines.append(
                f"  {tenant.tenant or '(no tenant)'}: from {rfc3339(tenant.first_blocked_at)}, "
                f"{usd(_micros(tenant.denied))} denied"
            )
    else:
        lines.append("No tenant would have been blocked.")
    lines.append(
        f"Saved (recorded spend the proposed budgets would have denied): "
        f"{usd(_micros(result.denied))}"
    )
    for budget_id, reason in sorted(result.skipped.items()):
        lines.append(f"Not replayed: {budget_id} ({reason})")
    lines += list(notes)
    return "\n".join(lines) + "\n"


def simulation_json(result: Simulation, period: DayRange, notes: Sequence[str]) -> str:
    document = {
        "from": period.first.isoformat(),
        "to": period.last.isoformat(),
        "recordedUsd": format_usd(_micros(result.recorded)),
        "deniedUsd": format_usd(_micros(result.denied)),
        "periods": [
            {
                "budget": outcome.budget.id,
                "user": outcome.subject,
                "period": outcome.period_key,
                "enforces": outcome.budget.enforces,
                "recordedUsd": format_usd(_micros(outcome.recorded)),
                "limitUsd": format_usd(outcome.limit_micros),
                "blockedAt": rfc3339(outcome.blocked_at) if outcome.blocked_at else None,
                "deniedUsd": format_usd(_micros(outcome.denied)),
            }
            for outcome in result.outcomes
        ],
        "tenantsBlocked": [
            {
                "tenant": tenant.tenant,
                "from": rfc3339(tenant.first_blocked_at),
                "deniedUsd": format_usd(_micros(tenant.denied)),
            }
            for tenant in result.tenants_blocked.values()
        ],
        "notReplayed": result.skipped,
        "notes": list(notes),
    }
    return json.dumps(document, indent=2) + "\n"
