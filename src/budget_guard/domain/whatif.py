"""What-if: recorded spend replayed against proposed budgets.

The history is the ledger's daily attribution (``domain.spend``): per UTC day, cost by
tenant, feature and model, and by user within the per-user window. Each cell is matched
to the proposed budgets by the same resolution the webhook uses
(``BudgetSnapshot.applicable``), and the days are replayed in order, so a request a
budget would have denied no longer counts toward the others.

Within a day spend is taken as even: a budget whose period would cross its limit during
the day blocks from the moment the crossing is reached (interpolated), and a request is
denied when any Enforce budget that applies to it blocks. Observe budgets never block;
what they would have denied is reported apart. What the history cannot show is said,
not guessed: budgets scoped by tier (tiers are not recorded) are left out, and per-user
budgets are replayed only on the days that still have per-user detail.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from budget_guard.domain.budget import Budget
from budget_guard.domain.resolution import AppliedBudget, BudgetSnapshot, RequestIdentity
from budget_guard.domain.spend import SpendCell

_DAY = dt.timedelta(days=1)
_Counter = tuple[str, str | None, str]  # budget id, subject, period key


@dataclass
class PeriodOutcome:
    """One budget's period (one user's, for a per-user template) in the replay."""

    budget: Budget
    subject: str | None
    period_key: str
    limit_micros: int
    recorded: Fraction = Fraction(0)  # the recorded spend its scope covers
    counted: Fraction = Fraction(0)  # what it would have let through (all budgets considered)
    blocked_at: dt.datetime | None = None  # when it would have reached its limit
    denied: Fraction = Fraction(0)  # recorded spend it would have denied itself

    @property
    def label(self) -> str:
        return f"{self.budget.id} (user {self.subject})" if self.subject else self.budget.id

    @property
    def blocks(self) -> bool:
        return self.blocked_at is not None and self.budget.enforces


@dataclass
class TenantOutcome:
    tenant: str
    first_blocked_at: dt.datetime
    denied: Fraction = Fraction(0)


@dataclass
class Simulation:
    outcomes: list[PeriodOutcome]
    tenants_blocked: dict[str, TenantOutcome]
    recorded: Fraction
    denied: Fraction  # spend the proposed budgets would have denied: saved, or lost work
    skipped: dict[str, str] = field(default_factory=dict)  # budget id -> why not replayed
    tenants_seen: frozenset[str] = frozenset()

    @property
    def blocking(self) -> list[PeriodOutcome]:
        return [outcome for outcome in self.outcomes if outcome.blocks]


def _not_replayable(budget: Budget) -> str | None:
    if budget.scope.tier is not None:
        return "scope.tier: the history does not record tiers"
    return None


def _identity(cell: SpendCell) -> RequestIdentity:
    return RequestIdentity(cell.tenant, cell.user, None, cell.feature, cell.model)


def _noon(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)


def simulate(budgets: Sequence[Budget], cells: Iterable[SpendCell]) -> Simulation:
    """Replay ``cells`` (per UTC day; with users on the days that have per-user detail,
    else one cell per tenant, feature and model) against ``budgets``."""
    snapshot = BudgetSnapshot(budgets)
    skipped = {r.id: r.message for r in snapshot.rejections}
    for budget in snapshot.budgets:
        reason = _not_replayable(budget)
        if reason is not None:
            skipped[budget.id] = reason
    by_day: dict[dt.date, list[SpendCell]] = defaultdict(list)
    for cell in cells:
        by_day[cell.day].append(cell)
    outcomes: dict[_Counter, PeriodOutcome] = {}
    tenants: dict[str, TenantOutcome] = {}
    recorded = denied = Fraction(0)
    tenants_seen: set[str] = set()
    for day in sorted(by_day):
        matched = [
            (cell, [a for a in snapshot.applicable(_identity(cell)) if a.budget.id not in skipped])
            for cell in by_day[day]
            if cell.cost_micros > 0
        ]
        totals: dict[_Counter, int] = defaultdict(int)
        for cell, applied in matched:
            tenants_seen.add(cell.tenant or "")
            recorded += cell.cost_micros
            for item in applied:
                totals[_counter(item, day, outcomes)] += cell.cost_micros
        allowed_share = {
            counter: _allowed_share(outcomes[counter], total, day)
            for counter, total in totals.items()
        }
        for cell, applied in matched:
            counters = [_counter(item, day, outcomes) for item in applied]
            share = min(
                (allowed_share[c] for c in counters if outcomes[c].budget.enforces),
                default=Fraction(1),
            )
            lost = cell.cost_micros * (1 - share)
            denied += lost
            for counter in counters:
                outcome = outcomes[counter]
                outcome.recorded += cell.cost_micros
                outcome.counted += cell.cost_micros * share
                outcome.denied += cell.cost_micros * (1 - allowed_share[counter])
            if lost > 0:
                _blocked_tenant(tenants, cell, counters, outcomes, lost)
    return Simulation(
        outcomes=sorted(
            outcomes.values(), key=lambda o: (o.budget.id, o.period_key, o.subject or "")
        ),
        tenants_blocked=tenants,
        recorded=recorded,
        denied=denied,
        skipped=skipped,
        tenants_seen=frozenset(tenants_seen),
    )


def _counter(
    applied: AppliedBudget, day: dt.date, outcomes: dict[_Counter, PeriodOutcome]
) -> _Counter:
    budget = applied.budget
    window = budget.window(_noon(day))
    counter = (budget.id, applied.subject, window.key)
    if counter not in outcomes:
        outcomes[counter] = PeriodOutcome(
            budget, applied.subject, window.key, budget.effective_limit(window)
        )
    return counter


def _allowed_share(outcome: PeriodOutcome, day_total: int, day: dt.date) -> Fraction:
    """The share of the day's spend the budget lets through, as if alone; records when
    it would reach its limit."""
    room = outcome.limit_micros - outcome.counted
    if day_total <= room:
        return Fraction(1)
    share = max(Fraction(0), room / day_total)
    if outcome.blocked_at is None:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        seconds = int(share * 86_400)
        outcome.blocked_at = start + dt.timedelta(seconds=seconds)
    return share


def _blocked_tenant(
    tenants: dict[str, TenantOutcome],
    cell: SpendCell,
    counters: Sequence[_Counter],
    outcomes: Mapping[_Counter, PeriodOutcome],
    lost: Fraction,
) -> None:
    tenant = cell.tenant or ""
    when = min(
        (
            outcome.blocked_at
            for c in counters
            if (outcome := outcomes[c]).blocks and outcome.blocked_at is not None
        ),
        default=dt.datetime(cell.day.year, cell.day.month, cell.day.day, tzinfo=dt.UTC),
    )
    known = tenants.get(tenant)
    if known is None:
        tenants[tenant] = TenantOutcome(tenant, when, lost)
    else:
        known.first_blocked_at = min(known.first_blocked_at, when)
        known.denied += lost
