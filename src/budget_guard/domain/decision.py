"""A decision's inputs and outcome, independent of where the counters live.

``plan_charges`` turns the budgets that apply to a request into ``BudgetCharge``s
(window, effective limit, threshold amounts, active burst pools) at one instant;
the ledger checks and reserves them atomically and answers a ``Decision``.

Values made for every request (``BudgetState``, ``Decision``) are NamedTuples:
immutable like the frozen dataclasses elsewhere, and several times cheaper to
build, which the webhook's hot path notices.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from budget_guard.domain.budget import HARD_LIMIT_PERCENT, Budget, BurstPool, Reservation
from budget_guard.domain.periods import PeriodWindow
from budget_guard.domain.resolution import AppliedBudget, BudgetSnapshot, RequestIdentity


@dataclass(frozen=True, slots=True)
class BudgetCharge:
    """One budget a request must fit in, as it stands at the decision's instant."""

    applied: AppliedBudget
    window: PeriodWindow
    effective_limit: int
    threshold_amounts: tuple[int, ...]
    pools: tuple[BurstPool, ...]

    @property
    def budget(self) -> Budget:
        return self.applied.budget

    @property
    def subject(self) -> str | None:
        return self.applied.subject


def charge_for(
    snapshot: BudgetSnapshot, applied: AppliedBudget, instant: dt.datetime
) -> BudgetCharge:
    budget = applied.budget
    window = budget.window(instant)
    limit = budget.effective_limit(window)
    return BudgetCharge(
        applied=applied,
        window=window,
        effective_limit=limit,
        threshold_amounts=budget.threshold_amounts(limit),
        pools=snapshot.active_pools(budget.id, instant),
    )


def reserves_worst_case(charges: Sequence[BudgetCharge]) -> bool:
    """Does a hard budget among ``charges`` ask for worst-case reservations?"""
    return any(
        charge.budget.reservation is Reservation.WORST_CASE and charge.budget.enforces
        for charge in charges
    )


def plan_charges(
    snapshot: BudgetSnapshot, identity: RequestIdentity, instant: dt.datetime
) -> tuple[BudgetCharge, ...]:
    return tuple(
        charge_for(snapshot, applied, instant) for applied in snapshot.applicable(identity)
    )


def _validity(
    snapshot: BudgetSnapshot, charges: tuple[BudgetCharge, ...], instant: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The span around ``instant`` in which ``charges`` stay the same: no period
    boundary and no burst pool opening or closing."""
    valid_from = max((c.window.start for c in charges), default=_EARLIEST)
    valid_until = min((c.window.end for c in charges), default=_LATEST)
    for charge in charges:
        for pool in snapshot.pools_for(charge.budget.id):
            for edge in (pool.valid_from, pool.valid_until):
                if edge <= instant:
                    valid_from = max(valid_from, edge)
                else:
                    valid_until = min(valid_until, edge)
    return valid_from, valid_until


class ChargePlanner:
    """``plan_charges`` with a bounded cache per identity, for the hot path.

    A cached plan is reused while the instant stays inside the span where no
    period rolls over and no burst pool opens or closes, so the same tuple of
    charges (and whatever the ledger derives from it) serves many requests.
    """

    def __init__(self, snapshot: BudgetSnapshot, max_entries: int = 65_536) -> None:
        self.snapshot = snapshot
        self._max_entries = max_entries
        self._plans: dict[
            RequestIdentity, tuple[dt.datetime, dt.datetime, tuple[BudgetCharge, ...]]
        ] = {}

    def plan(self, identity: RequestIdentity, instant: dt.datetime) -> tuple[BudgetCharge, ...]:
        cached = self._plans.get(identity)
        if cached is not None and cached[0] <= instant < cached[1]:
            return cached[2]
        charges = plan_charges(self.snapshot, identity, instant)
        valid_from, valid_until = _validity(self.snapshot, charges, instant)
        if len(self._plans) >= self._max_entries:
            self._plans.clear()
        self._plans[identity] = (valid_from, valid_until, charges)
        return charges


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


class BudgetVerdict(IntEnum):
    FITS = 0
    WOULD_DENY = 1  # Observe mode: reserved anyway, reported
    DENIES = 2


class BudgetState(NamedTuple):
    """One budget after a decision: its usage, and how it judged the request."""

    charge: BudgetCharge
    used: int  # spent + reserved on the budget itself, after this decision
    verdict: BudgetVerdict = BudgetVerdict.FITS
    pool: BurstPool | None = None  # the burst pool that took this request
    pool_used: int = 0
    crossed: tuple[int, ...] = ()  # thresholds (percent; 100 = exhausted) first reached now

    @property
    def remaining(self) -> int:
        if self.pool is not None:
            return max(0, self.pool.amount_micros - self.pool_used)
        return max(0, self.charge.effective_limit - self.used)

    @property
    def reached_threshold(self) -> int | None:
        """The highest soft threshold this budget's usage has reached, if any."""
        amounts = self.charge.threshold_amounts
        if not amounts or self.used < amounts[0]:  # the usual case, decided at once
            return None
        thresholds = self.charge.budget.thresholds
        highest = len(amounts) - 1
        while self.used < amounts[highest]:
            highest -= 1
        return thresholds[highest]


class AllowSummary(NamedTuple):
    """What an allowed decision tells the caller, gathered in one pass over its budgets."""

    remaining: int | None  # the least room left among enforced budgets (or their pools)
    soft_limit: int | None  # the highest soft threshold any budget has reached
    model_override: str | None  # a cheaper model a budget past its first threshold suggests
    burst_pools: tuple[str, ...]  # the pools that took the request
    would_deny: tuple[str, ...]  # Observe budgets that would have denied it
    tightest: str | None = None  # the enforced budget whose room is ``remaining``


class Decision(NamedTuple):
    request_id: str
    allowed: bool
    cost_micros: int
    states: tuple[BudgetState, ...]

    @property
    def blocking(self) -> BudgetState | None:
        """The denying budget a client must wait for: latest reset, then least room."""
        denying = [s for s in self.states if s.verdict is BudgetVerdict.DENIES]
        if not denying:
            return None
        return max(denying, key=lambda s: (s.charge.window.end, -s.remaining))

    def summary(self, model: str | None) -> AllowSummary:
        """Remaining room, soft limit, model downgrade, pools and would-deny, in one pass
        (this runs for every allowed request)."""
        remaining: int | None = None
        tightest: str | None = None
        soft_limit: int | None = None
        override: str | None = None
        pools: list[str] = []
        would_deny: list[str] = []
        for state in self.states:
            budget = state.charge.budget
            if budget.enforces:
                room = state.remaining
                if remaining is None or room < remaining:
                    remaining, tightest = room, budget.id
            reached = state.reached_threshold
            if reached is not None:
                soft_limit = reached if soft_limit is None else max(soft_limit, reached)
            past_first = reached is not None or (
                not state.charge.threshold_amounts and state.used >= state.charge.effective_limit
            )
            if past_first and override is None and model is not None and budget.degrade_models:
                override = budget.degrade_models.get(model)
            if state.pool is not None:
                pools.append(state.pool.id)
            if state.verdict is BudgetVerdict.WOULD_DENY:
                would_deny.append(budget.id)
        return AllowSummary(
            remaining, soft_limit, override, tuple(pools), tuple(would_deny), tightest
        )


def percent_of(used: int, limit: int) -> float:
    return HARD_LIMIT_PERCENT * used / limit if limit else float(HARD_LIMIT_PERCENT)
