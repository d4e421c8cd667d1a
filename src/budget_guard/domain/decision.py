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
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from budget_guard.domain.budget import HARD_LIMIT_PERCENT, Budget, BurstPool
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
    def utilization_percent(self) -> float:
        limit = self.charge.effective_limit
        return 100.0 * self.used / limit if limit else 100.0

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

    @property
    def exhausted(self) -> bool:
        return self.used >= self.charge.effective_limit


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

    @property
    def tightest(self) -> BudgetState | None:
        """The enforced budget with the least room left after this decision."""
        enforced = [s for s in self.states if s.charge.budget.enforces]
        return min(enforced, key=lambda s: s.remaining) if enforced else None

    @property
    def would_deny(self) -> tuple[BudgetState, ...]:
        return tuple(s for s in self.states if s.verdict is BudgetVerdict.WOULD_DENY)

    @property
    def soft_limit(self) -> int | None:
        """The highest soft threshold any applicable budget has reached."""
        reached = [t for s in self.states if (t := s.reached_threshold) is not None]
        return max(reached) if reached else None

    @property
    def burst_pools(self) -> tuple[BurstPool, ...]:
        return tuple(s.pool for s in self.states if s.pool is not None)

    def model_override(self, model: str | None) -> str | None:
        """A cheaper model suggested by a budget past its first soft threshold."""
        if model is None:
            return None
        for state in self.states:
            degrade = state.charge.budget.degrade_models
            amounts = state.charge.threshold_amounts
            past_first = (
                state.used >= amounts[0] if amounts else state.used >= state.charge.effective_limit
            )
            if past_first and model in degrade:
                return degrade[model]
        return None


def percent_of(used: int, limit: int) -> float:
    return HARD_LIMIT_PERCENT * used / limit if limit else float(HARD_LIMIT_PERCENT)
