"""How much fail-open budgets let through during an outage (domain.failopen)."""

from __future__ import annotations

import datetime as dt

from budget_guard.domain.decision import BudgetCharge, plan_charges
from budget_guard.domain.failopen import FailOpenAllowance
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from tests.factories import budget

NOW = dt.datetime(2030, 5, 10, 12, 0, tzinfo=dt.UTC)


class Known:
    """What a process knows of its counters, as LocalLeases keeps it."""

    def __init__(self, assigned: dict[str, int] | None = None) -> None:
        self.assigned = dict(assigned or {})

    def known_assigned(self, counter: str) -> int | None:
        return self.assigned.get(counter)

    def count_unrecorded(self, counter: str, cost: int) -> None:
        self.assigned[counter] = self.assigned.get(counter, 0) + cost


def charges(*budgets: object) -> tuple[BudgetCharge, ...]:
    snapshot = BudgetSnapshot(list(budgets))  # type: ignore[arg-type]
    return plan_charges(snapshot, RequestIdentity(tenant="acme", user="u1"), NOW)


def test_default_allowance_is_five_percent_of_the_limit_per_outage() -> None:
    planned = charges(budget("acme", "10.00", tenant="acme"))  # $0.50 may fail open
    allowance = FailOpenAllowance(Known())
    taken = [allowance.take(planned, ["c"], 100_000, outage=1) for _ in range(6)]
    assert taken[:5] == [None] * 5
    assert taken[5] is not None and taken[5].budget.id == "default/acme"
    assert allowance.take(planned, ["c"], 100_000, outage=2) is None  # a new outage


def test_an_explicit_fail_open_limit_and_several_budgets_all_or_nothing() -> None:
    planned = charges(
        budget("acme", "10.00", tenant="acme", failOpenLimit="0.25"),
        budget("global", "1000.00"),
    )
    known = Known()
    allowance = FailOpenAllowance(known)
    assert allowance.take(planned, ["t", "g"], 200_000, outage=1) is None
    refused = allowance.take(planned, ["t", "g"], 100_000, outage=1)
    assert refused is not None and refused.budget.id == "default/acme"
    assert known.assigned == {"t": 200_000, "g": 200_000}  # the refusal counted nothing


def test_never_past_the_limit_plus_allowance_from_what_was_last_known() -> None:
    planned = charges(budget("acme", "10.00", tenant="acme"))
    known = Known({"c": 10_400_000})  # already $0.40 past its $10 limit
    allowance = FailOpenAllowance(known)
    assert allowance.take(planned, ["c"], 100_000, outage=1) is None  # up to $10.50
    assert allowance.take(planned, ["c"], 100_000, outage=1) is not None
    # A flapping ledger does not reset that: the next outage starts from $10.50.
    assert allowance.take(planned, ["c"], 100_000, outage=2) is not None


def test_observe_budgets_take_no_allowance() -> None:
    planned = charges(budget("watch", "0.10", tenant="acme", enforcement="Observe"))
    allowance = FailOpenAllowance(Known())
    assert all(allowance.take(planned, ["c"], 100_000, outage=1) is None for _ in range(10))
