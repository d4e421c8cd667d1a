"""The Argo CD health checks of examples/argocd/argocd-cm.yaml, run in a real Lua 5.1
interpreter (Argo CD's gopher-lua speaks Lua 5.1) against a status sample of each
outcome: Progressing until Enforced, Degraded when not Accepted, Healthy otherwise
(an exhausted budget is doing its job), and the example Applications' sync waves."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "examples" / "argocd"
HEALTH_KEY = "resource.customizations.health."


def health_script(group_kind: str) -> str:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    return str(config_map["data"][HEALTH_KEY + group_kind])


def assess(group_kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the check as Argo CD does: ``obj`` global, the returned table read."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(health_script(group_kind))
    return str(result["status"]), str(result["message"])


def condition(kind: str, true: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if true else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-28T12:00:00Z",
        "observedGeneration": 2,
    }


ENFORCED = [
    condition("Accepted", True, "Valid", "the budget is valid"),
    condition("Enforced", True, "Published", "the webhooks enforce this generation"),
    condition("Ready", True, "Ready", "accepted and enforced"),
]


def budget(conditions: list[dict[str, Any]] | None, summary: str = "Ok") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "budgetguard.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "acme", "namespace": "team", "generation": 2},
        "spec": {"limit": "100.00"},
    }
    if conditions is not None:
        obj["status"] = {
            "observedGeneration": 2,
            "state": summary.split()[0],  # the enum; the summary is the Status column
            "summary": summary,
            "conditions": conditions,
        }
    return obj


def stale(obj: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["metadata"]["generation"] = 3
    return changed


BUDGET_CASES = [
    ("no status yet", budget(None), "Progressing", "Waiting for the budget operator"),
    ("a spec the operator has not seen", stale(budget(ENFORCED)), "Progressing", "generation 3"),
    (
        "accepted, not published yet",
        budget(
            [
                condition("Accepted", True, "Valid", "the budget is valid"),
                condition("Enforced", False, "NotPublished", "not published yet"),
            ],
            "Pending",
        ),
        "Progressing",
        "Not enforced yet: not published yet",
    ),
    (
        "rejected",
        budget(
            [
                condition("Accepted", False, "InvalidTimeZone", "timeZone Mars/Olympus is unknown"),
                condition("Enforced", False, "Rejected", "not enforced: timeZone"),
            ],
            "Rejected",
        ),
        "Degraded",
        "Not accepted (InvalidTimeZone): timeZone Mars/Olympus is unknown",
    ),
    ("enforced", budget(ENFORCED), "Healthy", "Enforced: Ok"),
    (
        "past a soft threshold",
        budget(
            [
                *ENFORCED,
                condition("SoftLimitReached", True, "Threshold80Reached", "80% of the limit used"),
            ],
            "SoftLimit 80%",
        ),
        "Healthy",
        "Enforced; 80% of the limit used",
    ),
    (
        "exhausted",
        budget(
            [
                *ENFORCED,
                condition("Exhausted", True, "LimitReached", "$100.20 of $100.00 used"),
            ],
            "Exhausted",
        ),
        "Healthy",
        "Exhausted, as intended: $100.20 of $100.00 used",
    ),
    (
        "alerts failing",
        budget(
            [*ENFORCED, condition("AlertsReady", False, "SecretNotFound", "no Secret")],
        ),
        "Healthy",
        "Enforced: Ok; alerts not delivered: no Secret",
    ),
]


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [case[1:] for case in BUDGET_CASES],
    ids=[case[0] for case in BUDGET_CASES],
)
def test_llmbudget_health(obj: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = assess("budgetguard.io_LLMBudget", obj)
    assert got_status == status
    assert message in got_message


def pool(status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "budgetguard.io/v1alpha1",
        "kind": "BurstBudget",
        "metadata": {"name": "black-friday", "namespace": "team", "generation": 1},
        "spec": {"amount": "500.00", "validFrom": "2027-11-26T06:00:00Z"},
    }
    if status is not None:
        obj["status"] = {"observedGeneration": 1, **status}
    return obj


ACCEPTED = [condition("Accepted", True, "Valid", "the burst pool is valid")]
POOL_CASES = [
    ("no status yet", pool(None), "Progressing", "Waiting for the budget operator"),
    (
        "rejected",
        pool({"conditions": [condition("Accepted", False, "BudgetNotFound", "no budget x")]}),
        "Degraded",
        "Not accepted (BudgetNotFound): no budget x",
    ),
    (
        "pending",
        pool({"conditions": ACCEPTED, "phase": "Pending"}),
        "Healthy",
        "Pending: opens at 2027-11-26T06:00:00Z",
    ),
    (
        "active",
        pool({"conditions": ACCEPTED, "phase": "Active", "remaining": "120.00"}),
        "Healthy",
        "Active: $120.00 of $500.00 left",
    ),
    (
        "exhausted",
        pool({"conditions": ACCEPTED, "phase": "Exhausted", "spent": "500.00"}),
        "Healthy",
        "Exhausted: $500.00 of $500.00 drawn",
    ),
]


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [case[1:] for case in POOL_CASES],
    ids=[case[0] for case in POOL_CASES],
)
def test_burstbudget_health(obj: dict[str, Any], status: str, message: str) -> None:
    assert assess("budgetguard.io_BurstBudget", obj) == (status, message)


def test_application_health_follows_the_application() -> None:
    app = {"kind": "Application", "status": {"health": {"status": "Degraded", "message": "x"}}}
    assert assess("argoproj.io_Application", app) == ("Degraded", "x")
    assert assess("argoproj.io_Application", {"kind": "Application"})[0] == "Progressing"


def test_the_app_of_apps_syncs_the_chart_before_the_budgets() -> None:
    apps = {
        path.name: yaml.safe_load(path.read_text()) for path in (ARGOCD / "apps").glob("*.yaml")
    }
    wave = {
        name: app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        for name, app in apps.items()
    }
    assert wave == {"llm-budget-guard.yaml": "0", "budgets.yaml": "1"}
    chart = apps["llm-budget-guard.yaml"]["spec"]["source"]
    assert chart["path"] == "charts/llm-budget-guard"
    assert chart["helm"]["valuesObject"]["argocd"]["syncWaves"] is True
    budget_paths = [source["path"] for source in apps["budgets.yaml"]["spec"]["sources"]]
    assert budget_paths == ["examples/argocd/namespaces", "examples/budgets"]


def test_every_budget_namespace_is_created_first() -> None:
    created = {
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all((ARGOCD / "namespaces" / "namespaces.yaml").read_text())
    }
    used = {
        doc["metadata"]["namespace"]
        for path in (ROOT / "examples" / "budgets").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
    }
    assert used == created
