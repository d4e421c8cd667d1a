"""The example budgets (examples/budgets/: the design brief's, and the demo's agents and
tenants): the operator's rules accept every one of them, and they say what the brief says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from budget_guard.domain.money import parse_usd
from budget_guard.operator.compile import compile_resources

BRIEF = Path(__file__).resolve().parents[2] / "examples" / "budgets"


def manifests() -> list[dict[str, Any]]:
    documents = [
        doc for path in sorted(BRIEF.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
    ]
    for doc in documents:  # what the API server adds
        doc["metadata"] |= {"uid": doc["metadata"]["name"], "generation": 1}
        doc["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z"
    return documents


def test_every_budget_of_the_brief_is_accepted() -> None:
    documents = manifests()
    compiled = compile_resources(
        [d for d in documents if d["kind"] == "LLMBudget"],
        [d for d in documents if d["kind"] == "BurstBudget"],
    )
    assert compiled.problems == {}
    assert len(compiled.budgets) == 15  # the brief's 11, and the demo's 4
    assert sorted(compiled.pools) == [
        "team-research/research-agent-launch",
        "tenant-initech/black-friday",
    ]


def test_the_figures_are_the_briefs() -> None:
    specs = {
        f"{d['metadata']['namespace']}/{d['metadata']['name']}": d["spec"] for d in manifests()
    }

    def limit(key: str) -> tuple[int, str]:
        return parse_usd(specs[key]["limit"], "limit"), specs[key].get("period", "Monthly")

    usd = 1_000_000
    assert limit("platform/free-per-user") == (usd // 10, "Daily")
    assert limit("platform/pro-per-user") == (5 * usd, "Daily")
    assert specs["platform/enterprise-alice-initech"]["scope"]["tier"] == "enterprise"
    assert limit("tenant-initech/initech-monthly") == (1000 * usd, "Monthly")
    assert specs["tenant-initech/initech-monthly"]["thresholds"] == [90]
    assert specs["tenant-initech/initech-monthly"]["alerts"]["format"] == "Slack"
    teams = {
        "team-data-science/data-science-monthly": 50_000,
        "team-ml-ops/ml-ops-monthly": 30_000,
        "team-research/research-monthly": 80_000,
        "team-infra/infra-monthly": 25_000,
    }
    for key, dollars in teams.items():
        assert limit(key) == (dollars * usd, "Monthly")
    assert "scope" not in specs["platform/global-cap"]
    assert specs["tenant-initech/black-friday"]["reason"] == "Black Friday weekend traffic"
