"""Which budgets apply: the worked examples of docs/concepts.md, as tests."""

from __future__ import annotations

import datetime as dt

from budget_guard.domain.resolution import (
    REASON_BUDGET_NOT_FOUND,
    REASON_DUPLICATE_SCOPE,
    BudgetSnapshot,
    RequestIdentity,
)
from tests.factories import budget, burst

SNAPSHOT = BudgetSnapshot(
    [
        budget("global-cap", "50000"),
        budget("acme", "5000", tenant="acme"),
        budget("globex", "3000", tenant="globex"),
        budget("chat-feature", "800", feature="chat"),
        budget("gpt4o-model", "2000", model="gpt-4o"),
        budget("free-per-user", "1", user="*", tier="free"),
        budget("pro-per-user", "20", user="*", tier="pro"),
        budget("every-user", "5", user="*"),
        budget("alice-custom", "500", user="alice"),
        budget("pro-pool", "1000", tier="pro"),
        budget("free-daily-per-user", "0.25", user="*", tier="free", period="Daily"),
        budget("acme-bob", "50", tenant="acme", user="bob"),
    ]
)


def names(identity: RequestIdentity) -> list[str]:
    return sorted(applied.budget.ref.name for applied in SNAPSHOT.applicable(identity))


def test_a_pro_user_gets_the_pro_template_not_the_generic_one() -> None:
    identity = RequestIdentity(
        tenant="acme", user="carol", tier="pro", feature="chat", model="gpt-4o"
    )
    assert names(identity) == [
        "acme",
        "chat-feature",
        "global-cap",
        "gpt4o-model",
        "pro-per-user",
        "pro-pool",
    ]


def test_an_explicit_user_budget_replaces_the_tier_template() -> None:
    identity = RequestIdentity(tenant="globex", user="alice", tier="pro", model="gpt-4o-mini")
    assert names(identity) == ["alice-custom", "global-cap", "globex", "pro-pool"]


def test_a_user_without_a_tier_gets_the_generic_template() -> None:
    assert names(RequestIdentity(user="dave")) == ["every-user", "global-cap"]


def test_templates_charge_each_user_separately() -> None:
    applied = SNAPSHOT.applicable(RequestIdentity(user="erin", tier="free"))
    subjects = {a.budget.ref.name: a.subject for a in applied}
    assert subjects == {
        "free-per-user": "erin",
        "free-daily-per-user": "erin",
        "global-cap": None,
    }


def test_daily_and_monthly_templates_both_apply() -> None:
    assert "free-daily-per-user" in names(RequestIdentity(user="erin", tier="free"))
    assert "free-per-user" in names(RequestIdentity(user="erin", tier="free"))


def test_user_level_budgets_compete_only_within_the_same_tenant_feature_model() -> None:
    # bob's tenant-scoped budget sits in another group than the tenant-less templates,
    # so both apply.
    identity = RequestIdentity(tenant="acme", user="bob", tier="free")
    assert names(identity) == [
        "acme",
        "acme-bob",
        "free-daily-per-user",
        "free-per-user",
        "global-cap",
    ]


def test_no_identity_only_global_budgets() -> None:
    assert names(RequestIdentity()) == ["global-cap"]


def test_duplicates_keep_the_older_budget_and_say_why() -> None:
    snapshot = BudgetSnapshot(
        [
            budget("newer", "10", tenant="acme", created="2026-02-01T00:00:00Z"),
            budget("older", "20", tenant="acme", created="2026-01-01T00:00:00Z"),
            budget("weekly", "5", tenant="acme", period="Weekly"),
        ]
    )
    assert [b.ref.name for b in snapshot.budgets] == ["older", "weekly"]
    (rejection,) = snapshot.rejections
    assert rejection.id == "default/newer"
    assert rejection.reason == REASON_DUPLICATE_SCOPE
    assert "default/older already covers scope tenant=acme with period Monthly" in rejection.message


def test_burst_pools_attach_to_their_budget_and_orphans_are_rejected() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    snapshot = BudgetSnapshot(
        [budget("acme", "10", tenant="acme")],
        [
            burst("extra", "acme", "5", start, start + dt.timedelta(days=7)),
            burst("orphan", "missing", "5", start, start + dt.timedelta(days=7)),
        ],
    )
    assert [p.ref.name for p in snapshot.pools_for("default/acme")] == ["extra"]
    assert snapshot.active_pools("default/acme", start + dt.timedelta(days=8)) == ()
    (rejection,) = snapshot.rejections
    assert (rejection.id, rejection.reason) == ("default/orphan", REASON_BUDGET_NOT_FOUND)
    assert "LLMBudget default/missing does not exist" in rejection.message


def test_resolution_is_cached_per_identity() -> None:
    identity = RequestIdentity(tenant="acme", user="zed")
    assert SNAPSHOT.applicable(identity) is SNAPSHOT.applicable(identity)
