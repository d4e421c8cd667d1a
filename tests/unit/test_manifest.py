"""Manifests into budgets: every bad field gets a ValueError naming it."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from budget_guard.domain.budget import Enforcement, FailureMode, Reservation, Scope
from budget_guard.domain.manifest import (
    ManifestError,
    parse_budget,
    parse_burst_budget,
    parse_manifests,
)
from budget_guard.domain.periods import Period

BUDGET: dict[str, Any] = {
    "apiVersion": "budgetguard.io/v1alpha1",
    "kind": "LLMBudget",
    "metadata": {"name": "acme-monthly", "namespace": "team-a", "uid": "u-1", "generation": 3},
    "spec": {
        "scope": {"tenant": "acme", "feature": "chat"},
        "limit": "1000.50",
        "period": "Monthly",
        "timeZone": "Europe/Berlin",
        "thresholds": [50, 75, 95],
        "enforcement": "Observe",
        "failureMode": "Closed",
        "onSoftLimit": {"degradeModels": {"gpt-4o": "gpt-4o-mini"}},
        "schedule": [{"months": [10, 11, 12], "multiplier": "2.0"}],
        "upgradeURL": "https://billing.example.com/upgrade",
    },
}

BURST: dict[str, Any] = {
    "apiVersion": "budgetguard.io/v1alpha1",
    "kind": "BurstBudget",
    "metadata": {"name": "launch-week", "namespace": "team-a"},
    "spec": {
        "budgetRef": {"name": "acme-monthly"},
        "amount": "500",
        "validFrom": "2026-11-01T00:00:00Z",
        "validUntil": "2026-11-08T00:00:00Z",
        "approvedBy": "cfo@example.com",
        "reason": "product launch",
        "maxRequestCost": "2.50",
    },
}


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(base)
    for name, value in changes.items():
        if value is None:
            manifest["spec"].pop(name, None)
        else:
            manifest["spec"][name] = value
    return manifest


def test_full_budget() -> None:
    budget = parse_budget(BUDGET)
    assert budget.id == "team-a/acme-monthly"
    assert (budget.uid, budget.generation) == ("u-1", 3)
    assert budget.scope == Scope(tenant="acme", feature="chat")
    assert budget.limit_micros == 1_000_500_000
    assert budget.period is Period.MONTHLY
    assert budget.zone.key == "Europe/Berlin"
    assert budget.thresholds == (50, 75, 95)
    assert budget.enforcement is Enforcement.OBSERVE
    assert budget.failure_mode is FailureMode.CLOSED
    assert dict(budget.degrade_models) == {"gpt-4o": "gpt-4o-mini"}
    assert budget.schedule[0].months == frozenset({10, 11, 12})
    assert budget.schedule[0].multiplier == Decimal("2.0")
    assert budget.upgrade_url == "https://billing.example.com/upgrade"


def test_defaults() -> None:
    budget = parse_budget({"kind": "LLMBudget", "metadata": {"name": "g"}, "spec": {"limit": "10"}})
    assert budget.ref.namespace == "default"
    assert budget.scope == Scope()
    assert budget.period is Period.MONTHLY
    assert budget.zone.key == "UTC"
    assert budget.thresholds == (70, 80, 90)
    assert budget.enforcement is Enforcement.ENFORCE
    assert budget.failure_mode is FailureMode.OPEN
    assert budget.reservation is Reservation.ESTIMATE
    assert budget.fail_open_limit_micros is None
    assert budget.fail_open_allowance(10_000_000) == 500_000  # 5 % of the limit


def test_fail_open_limit_and_worst_case() -> None:
    budget = parse_budget(
        {
            "kind": "LLMBudget",
            "metadata": {"name": "g"},
            "spec": {"limit": "10", "failOpenLimit": "0.25", "reservation": "WorstCase"},
        }
    )
    assert budget.fail_open_allowance(10_000_000) == 250_000
    assert budget.reservation is Reservation.WORST_CASE
    closed = parse_budget(
        {
            "kind": "LLMBudget",
            "metadata": {"name": "c"},
            "spec": {"limit": "10", "failureMode": "Closed"},
        }
    )
    assert closed.fail_open_allowance(10_000_000) == 0


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"limit": "-5"}, "spec.limit", "must be positive"),
        ({"limit": "NaN"}, "spec.limit", "must be a finite amount"),
        ({"limit": "Infinity"}, "spec.limit", "must be a finite amount"),
        ({"limit": "1.1234567"}, "spec.limit", "at most 6 decimals"),
        ({"limit": 10.5}, "spec.limit", "must be a decimal string"),
        ({"limit": None}, "spec.limit", "is required"),
        ({"period": "Fortnightly"}, "spec.period", "must be one of Daily, Weekly, Monthly"),
        ({"thresholds": [80, 70]}, "spec.thresholds[1]", "strictly ascending"),
        ({"thresholds": [70, 70]}, "spec.thresholds[1]", "strictly ascending"),
        ({"thresholds": [0, 50]}, "spec.thresholds[0]", "between 1 and 99"),
        ({"thresholds": [50, 100]}, "spec.thresholds[1]", "between 1 and 99"),
        ({"thresholds": [50.5]}, "spec.thresholds[0]", "whole percentage"),
        ({"thresholds": "70,80"}, "spec.thresholds", "must be a list"),
        ({"timeZone": "Mars/Olympus"}, "spec.timeZone", "unknown IANA time zone"),
        ({"enforcement": "Block"}, "spec.enforcement", "must be one of Enforce, Observe"),
        ({"failureMode": "open"}, "spec.failureMode", "must be one of Open, Closed"),
        (
            {"failureMode": "Closed", "failOpenLimit": "1"},
            "spec.failOpenLimit",
            "applies only with failureMode: Open",
        ),
        (
            {"failureMode": "Open", "failOpenLimit": 0.5},
            "spec.failOpenLimit",
            "must be a decimal string of USD",
        ),
        ({"reservation": "worst"}, "spec.reservation", "must be one of Estimate, WorstCase"),
        ({"scope": {"tenant": "*"}}, "spec.scope.tenant", '"*" is only allowed as the whole'),
        ({"scope": {"user": "al*"}}, "spec.scope.user", '"*" is only allowed as the whole'),
        ({"scope": {"team": "x"}}, "spec.scope.team", "unknown scope field"),
        ({"scope": {"tenant": "a b"}}, "spec.scope.tenant", "without spaces, commas, braces"),
        ({"scope": {"tenant": "{a}"}}, "spec.scope.tenant", "without spaces, commas, braces"),
        ({"scope": {"tenant": "a,b"}}, "spec.scope.tenant", "without spaces, commas, braces"),
        (
            {"schedule": [{"months": [13], "multiplier": "2"}]},
            "spec.schedule[0].months",
            "months are 1-12",
        ),
        (
            {"schedule": [{"months": [1], "multiplier": "2"}, {"months": [1], "multiplier": "3"}]},
            "spec.schedule[1].months",
            "month 1 appears in two",
        ),
        (
            {"schedule": [{"months": [1], "multiplier": "0"}]},
            "spec.schedule[0].multiplier",
            "above 0 and at most 10",
        ),
        (
            {"schedule": [{"months": [1], "multiplier": "NaN"}]},
            "spec.schedule[0].multiplier",
            "above 0 and at most 10",
        ),
        (
            {"onSoftLimit": {"degradeModels": {"gpt-4o": "gpt-4o"}}},
            "spec.onSoftLimit.degradeModels.gpt-4o",
            "different, cheaper model",
        ),
        ({"upgradeURL": "ftp://x"}, "spec.upgradeURL", "http(s) URL"),
    ],
)
def test_budget_errors_name_the_field(changes: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_budget(with_spec(BUDGET, **changes))
    error = caught.value
    assert isinstance(error, ManifestError)
    assert error.field == field
    assert problem in str(error)
    assert str(error).startswith(f"{field}: ")


def test_user_star_is_a_template() -> None:
    budget = parse_budget(with_spec(BUDGET, scope={"user": "*", "tier": "pro"}))
    assert budget.scope.is_user_template


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({}, "metadata.name"),
        ({"name": "Bad_Name"}, "metadata.name"),
        ({"name": "ok", "namespace": "Bad NS"}, "metadata.namespace"),
    ],
)
def test_metadata_errors(metadata: dict[str, Any], field: str) -> None:
    manifest = copy.deepcopy(BUDGET)
    manifest["metadata"] = metadata
    with pytest.raises(ManifestError) as caught:
        parse_budget(manifest)
    assert caught.value.field == field


def test_full_burst_budget() -> None:
    pool = parse_burst_budget(BURST)
    assert pool.budget.id == "team-a/acme-monthly"
    assert pool.amount_micros == 500_000_000
    assert pool.valid_from == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert pool.max_request_micros == 2_500_000
    assert pool.active_at(dt.datetime(2026, 11, 7, 23, 59, tzinfo=dt.UTC))
    assert not pool.active_at(dt.datetime(2026, 11, 8, tzinfo=dt.UTC))
    assert pool.admits(2_500_000) and not pool.admits(2_500_001)


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"validUntil": "2026-10-01T00:00:00Z"}, "spec.validUntil", "after spec.validFrom"),
        ({"validFrom": "2026-11-01T00:00:00"}, "spec.validFrom", "zone offset"),
        ({"validFrom": "next monday"}, "spec.validFrom", "RFC 3339"),
        ({"approvedBy": " "}, "spec.approvedBy", "who approved"),
        ({"approvedBy": None}, "spec.approvedBy", "who approved"),
        ({"amount": "0"}, "spec.amount", "must be positive"),
        ({"amount": "-3"}, "spec.amount", "must be positive"),
        ({"maxRequestCost": "0.0000001"}, "spec.maxRequestCost", "at most 6 decimals"),
        ({"budgetRef": {}}, "spec.budgetRef.name", "is required"),
    ],
)
def test_burst_errors_name_the_field(changes: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_burst_budget(with_spec(BURST, **changes))
    assert caught.value.field == field
    assert problem in str(caught.value)


def test_yaml_timestamps_are_accepted() -> None:
    pool = parse_burst_budget(with_spec(BURST, validFrom=dt.datetime(2026, 11, 1, tzinfo=dt.UTC)))
    assert pool.valid_from.year == 2026


def test_parse_manifests_names_the_document() -> None:
    parsed = parse_manifests([BUDGET, None, BURST])
    assert len(parsed.budgets) == 1 and len(parsed.pools) == 1
    with pytest.raises(ManifestError) as caught:
        parse_manifests([BUDGET, with_spec(BUDGET, limit="-1")], source="budgets.yaml")
    assert str(caught.value).startswith(
        "budgets.yaml: document 2 (LLMBudget acme-monthly) spec.limit: must be positive"
    )
    with pytest.raises(ManifestError, match="must be LLMBudget or BurstBudget"):
        parse_manifests([{"kind": "ConfigMap", "metadata": {"name": "x"}}])
