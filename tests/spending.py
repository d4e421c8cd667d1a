"""Synthetic spend through the real ledger, on any day: histories with known answers.

Each request is reserved at ``when`` (forced, so no limit stands in the way of writing
history) and settled at its cost, exactly as the webhook would: the counters, the daily
and hourly history, the attribution and the settled stream all get it.
"""

from __future__ import annotations

import datetime as dt
import uuid

from budget_guard.domain.decision import plan_charges
from budget_guard.domain.pricing import Usage
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.store.ledger import Ledger

USD = 1_000_000


def identity(
    tenant: str | None = "acme",
    user: str | None = "alice",
    feature: str | None = "chat",
    model: str | None = "gpt-4o",
) -> RequestIdentity:
    return RequestIdentity(tenant=tenant, user=user, feature=feature, model=model)


async def spend(
    ledger: Ledger,
    snapshot: BudgetSnapshot,
    who: RequestIdentity,
    when: dt.datetime,
    cost_micros: int,
    usage: Usage | None = None,
) -> str:
    """One request of ``who`` at ``when`` costing ``cost_micros``; returns its id."""
    request_id = f"r-{uuid.uuid4().hex[:12]}"
    charges = plan_charges(snapshot, who, when)
    await ledger.reserve(request_id, charges, cost_micros, when, who.attribution, force=True)
    await ledger.settle(request_id, cost_micros, when, usage)
    return request_id


async def spend_daily(
    ledger: Ledger,
    snapshot: BudgetSnapshot,
    who: RequestIdentity,
    first: dt.date,
    amounts: list[int],
    hour: int = 12,
) -> None:
    """``amounts[n]`` on day ``first + n`` (at ``hour`` UTC), one request a day."""
    for offset, amount in enumerate(amounts):
        day = first + dt.timedelta(days=offset)
        if amount:
            when = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)
            await spend(ledger, snapshot, who, when, amount)
