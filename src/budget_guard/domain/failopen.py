"""How much a fail-open budget may still let through while the ledger is away.

``failureMode: Open`` keeps traffic flowing during a real Redis outage, but never
without bound. Per budget counter (per user, for a per-user template), per outage
and per process (a webhook replica, or an application's ``budget_guard.client``
direct backend), fail-open spend stays within the budget's allowance
(``spec.failOpenLimit``, by default a share of its limit), and never takes the
counter past its limit plus that allowance, counted from what this process last
knew was assigned on it (so a budget that flaps cannot creep up outage after
outage). Past either bound the budget fails closed (503). So a hard limit ends at
most ``replicas x allowance`` above where it stood when the outage began.

``Observe`` budgets never block, so they take no allowance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from budget_guard.domain.decision import BudgetCharge


class KnownUsage(Protocol):
    """What this process knows of counters (the webhook's ``store.leases.LocalLeases``)."""

    def known_assigned(self, counter: str) -> int | None: ...

    def count_unrecorded(self, counter: str, cost: int) -> None: ...


class FailOpenAllowance:
    """One per process; ``outage`` numbers the ledger's outages (a new one resets)."""

    def __init__(self, known: KnownUsage) -> None:
        self._known = known
        self._outage = -1
        self._spent: dict[str, int] = {}
        self.refused = 0

    def take(
        self, charges: Sequence[BudgetCharge], counters: Sequence[str], cost: int, outage: int
    ) -> BudgetCharge | None:
        """Count ``cost`` as let through on every charge, or return the first budget
        whose allowance it would exceed (then nothing is counted)."""
        if outage != self._outage:
            self._outage, self._spent = outage, {}
        for charge, counter in zip(charges, counters, strict=True):
            budget = charge.budget
            if not budget.enforces:
                continue
            allowance = budget.fail_open_allowance(charge.effective_limit)
            spent = self._spent.get(counter, 0) + cost
            known = self._known.known_assigned(counter)
            over_limit = known is not None and known + cost > charge.effective_limit + allowance
            if spent > allowance or over_limit:
                self.refused += 1
                return charge
        for charge, counter in zip(charges, counters, strict=True):
            if charge.budget.enforces:
                self._spent[counter] = self._spent.get(counter, 0) + cost
                self._known.count_unrecorded(counter, cost)
        return None
