"""What `kubectl explain` and `kubectl get` show of the CRDs: a description on every spec
and status field, the status the operator writes described field by field (nothing it
writes would be pruned), conditions as metav1.Condition has them, and times to come in
string columns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from budget_guard.domain.anomaly import Anomaly
from budget_guard.domain.money import parse_usd
from budget_guard.domain.review import build_review
from budget_guard.operator.compile import compile_resources
from budget_guard.operator.crds import burstbudget_crd, llmbudget_crd
from budget_guard.operator.status import AlertState, Insight, budget_status, burst_status
from budget_guard.store.usage import BudgetUsage, PoolUsage

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
CRDS = {"LLMBudget": llmbudget_crd(), "BurstBudget": burstbudget_crd()}


def version(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0])


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(version(crd)["schema"]["openAPIV3Schema"])


def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from fields(child, f"{path}.{name}")
    if node.get("items", {}).get("type") == "object":  # kubectl explain shows objects only
        yield from fields(node["items"], f"{path}[]")


@pytest.mark.parametrize("kind", CRDS)
def test_every_spec_and_status_field_is_described(kind: str) -> None:
    root = schema(CRDS[kind])["properties"]
    undescribed = [
        path
        for part in ("spec", "status")
        for path, node in fields(root[part], part)
        if not node.get("description", "").strip()
    ]
    assert undescribed == []


@pytest.mark.parametrize("kind", CRDS)
def test_status_keeps_no_unknown_fields(kind: str) -> None:
    status = schema(CRDS[kind])["properties"]["status"]
    assert all(
        "x-kubernetes-preserve-unknown-fields" not in node for _, node in fields(status, "status")
    )


@pytest.mark.parametrize("kind", CRDS)
def test_conditions_are_metav1_conditions(kind: str) -> None:
    condition = schema(CRDS[kind])["properties"]["status"]["properties"]["conditions"]["items"]
    assert condition["required"] == ["type", "status", "reason", "message", "lastTransitionTime"]
    properties = condition["properties"]
    assert properties["lastTransitionTime"]["format"] == "date-time"
    assert properties["reason"]["pattern"] == "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    assert properties["status"]["enum"] == ["True", "False", "Unknown"]


def test_times_to_come_are_string_columns() -> None:
    columns = {
        (kind, column["name"]): column["type"]
        for kind, crd in CRDS.items()
        for column in version(crd)["additionalPrinterColumns"]
    }
    assert columns[("LLMBudget", "Resets")] == "string"
    assert columns[("BurstBudget", "Valid From")] == "string"
    assert columns[("BurstBudget", "Valid Until")] == "string"
    assert {kind_name for kind_name, kind in columns.items() if kind == "date"} == {
        ("LLMBudget", "Age"),
        ("BurstBudget", "Age"),
    }


def written_paths(value: Any, path: str) -> Iterator[str]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from written_paths(child, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from written_paths(item, f"{path}[]")


def declared_paths(kind: str) -> set[str]:
    declared = set()
    for path, node in fields(schema(CRDS[kind])["properties"]["status"], "status"):
        declared.add(path)
        if node.get("type") == "array":  # its items, objects or not
            declared.add(f"{path}[]")
    return declared


def manifests() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": "team", "uid": name, "generation": 1}

    budgets = [
        {
            "kind": "LLMBudget",
            "metadata": meta("acme"),
            "spec": {
                "limit": "10",
                "scope": {"tenant": "acme"},
                "commitment": {"amount": "20", "discountPercent": "10"},
            },
        },
        {
            "kind": "LLMBudget",
            "metadata": meta("per-user"),
            "spec": {"limit": "1", "scope": {"user": "*"}},
        },
    ]
    pool = {
        "kind": "BurstBudget",
        "metadata": meta("launch"),
        "spec": {
            "budgetRef": {"name": "acme"},
            "amount": "5",
            "validFrom": "2026-11-01T00:00:00Z",
            "validUntil": "2026-11-30T00:00:00Z",
            "approvedBy": "cfo",
        },
    }
    return budgets, [pool]


def test_every_field_the_operator_writes_is_in_the_schema() -> None:
    budgets, pools = manifests()
    compiled = compile_resources(budgets, pools)
    acme, per_user, launch = (
        compiled.budgets["team/acme"],
        compiled.budgets["team/per-user"],
        compiled.pools["team/launch"],
    )
    pool_usage = PoolUsage(
        launch,
        used=parse_usd("5", "x"),
        spent=parse_usd("5", "x"),
        requests=3,
        activated_at_ms=1,
        exhausted_at_ms=2,
    )
    window = acme.window(NOW)
    usages = {
        "team/acme": BudgetUsage(
            acme,
            window,
            acme.effective_limit(window),
            used=9_000_000,
            spent=8_000_000,
            pools=(pool_usage,),
        ),
        "team/per-user": BudgetUsage(
            per_user,
            per_user.window(NOW),
            per_user.effective_limit(per_user.window(NOW)),
            users_tracked=3,
            users_exhausted=1,
            top_users=(("alice", 1_000_000),),
        ),
    }
    alerts = AlertState(False, "SecretNotFound", "no Secret")
    days = {NOW.date() - dt.timedelta(days=n): 1_000_000 for n in range(40)}
    written = set()
    for key, usage in usages.items():
        review = build_review(
            usage.budget, days, NOW, allocated_micros=usage.effective_limit, spent_micros=8_000_000
        )
        insight = Insight(review, Anomaly(True, "hour", 5, 1, 7, "a jump"))
        status = budget_status(key, compiled, {key: 1}, usage, alerts, NOW, insight)
        written |= set(written_paths(status, "status"))
    assert {"status.forecast.limitDate", "status.commitment.projectedUnused"} <= written
    assert written <= declared_paths("LLMBudget"), written - declared_paths("LLMBudget")
    review = dict.fromkeys(("spent", "peakDay", "peakDaySpent", "approvedBy", "reason"), "x")
    review |= {"requests": 3, "endedAt": "2026-11-30T00:00:00Z"}
    status = burst_status("team/launch", compiled, pool_usage, review, NOW)
    written = set(written_paths(status, "status"))
    assert written <= declared_paths("BurstBudget"), written - declared_paths("BurstBudget")
