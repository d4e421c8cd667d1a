"""A denial's 429 body reads back as the same denial (the client's remote backend)."""

from __future__ import annotations

import datetime as dt

import pytest

from budget_guard.domain.decision import BudgetState, BudgetVerdict, plan_charges
from budget_guard.domain.denial import Denial, denial_for
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from tests.factories import budget

NOW = dt.datetime(2030, 5, 10, 15, 0, tzinfo=dt.UTC)


def a_denial() -> Denial:
    snapshot = BudgetSnapshot([budget("acme", "1", tenant="acme", period="Daily")])
    (charge,) = plan_charges(snapshot, RequestIdentity(tenant="acme"), NOW)
    state = BudgetState(charge, used=1_010_000, verdict=BudgetVerdict.DENIES)
    return denial_for(state, 55_700, "r-1", NOW)


def test_the_body_reads_back_as_the_same_denial() -> None:
    denial = a_denial()
    assert Denial.from_body(denial.body()) == denial
    assert denial.resets_at == dt.datetime(2030, 5, 11, tzinfo=dt.UTC)
    assert "$1.01 of $1.00 used this day (2030-05-10)" in denial.message
    assert "past the limit" in denial.message  # over by $0.01: the words say why


def test_a_body_without_a_field_names_it() -> None:
    body = a_denial().body()
    del body["resets_at"]
    with pytest.raises(ValueError, match=r"error\.resets_at: is required"):
        Denial.from_body(body)
