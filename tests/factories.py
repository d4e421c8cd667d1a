"""Small builders for domain objects in tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.manifest import parse_budget, parse_burst_budget


def budget(
    name: str,
    limit: str = "10",
    *,
    namespace: str = "default",
    created: str | None = None,
    **spec: Any,
) -> Budget:
    scope = {
        key: spec.pop(key) for key in ("tenant", "user", "tier", "feature", "model") if key in spec
    }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    return parse_budget(
        {
            "kind": "LLMBudget",
            "metadata": metadata,
            "spec": {"scope": scope, "limit": limit, **spec},
        }
    )


def burst(
    name: str,
    budget_name: str,
    amount: str,
    valid_from: dt.datetime,
    valid_until: dt.datetime,
    *,
    namespace: str = "default",
    max_request_cost: str | None = None,
) -> BurstPool:
    spec: dict[str, Any] = {
        "budgetRef": {"name": budget_name},
        "amount": amount,
        "validFrom": valid_from.isoformat(),
        "validUntil": valid_until.isoformat(),
        "approvedBy": "finance@example.com",
        "reason": "test",
    }
    if max_request_cost is not None:
        spec["maxRequestCost"] = max_request_cost
    return parse_burst_budget(
        {"kind": "BurstBudget", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )
