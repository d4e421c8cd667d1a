"""The test builders, in one place: LLMBudget and BurstBudget manifests as the API
server would hold them, and the domain objects parsed from them.

Scope fields (tenant, user, tier, feature, model) are given as keywords beside the
other spec fields: ``budget_manifest("acme", "10", tenant="acme", period="Daily")``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from budget_guard.domain.budget import SCOPE_FIELDS, Budget, BurstPool
from budget_guard.domain.manifest import API_VERSION, parse_budget, parse_burst_budget


def manifest(
    kind: str,
    name: str,
    spec: dict[str, Any],
    namespace: str = "default",
    **metadata: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": dict(spec),
    }


def budget_manifest(
    name: str, limit: str = "10", *, namespace: str = "default", **spec: Any
) -> dict[str, Any]:
    """An LLMBudget manifest; ``created``, ``uid`` and ``generation`` go to its metadata."""
    metadata = {k: spec.pop(k) for k in ("uid", "generation") if k in spec}
    if "created" in spec:
        metadata["creationTimestamp"] = spec.pop("created")
    scope = {key: spec.pop(key) for key in SCOPE_FIELDS if key in spec}
    return manifest(
        "LLMBudget", name, {"scope": scope, "limit": limit, **spec}, namespace, **metadata
    )


def burst_manifest(
    name: str,
    budget_name: str,
    amount: str,
    valid_from: dt.datetime | str,
    valid_until: dt.datetime | str,
    *,
    namespace: str = "default",
    **spec: Any,
) -> dict[str, Any]:
    def instant(value: dt.datetime | str) -> str:
        return value if isinstance(value, str) else value.isoformat()

    body: dict[str, Any] = {
        "budgetRef": {"name": budget_name},
        "amount": amount,
        "validFrom": instant(valid_from),
        "validUntil": instant(valid_until),
        "approvedBy": "finance@example.com",
        "reason": "test",
        **spec,
    }
    return manifest("BurstBudget", name, body, namespace)


def budget(name: str, limit: str = "10", **spec: Any) -> Budget:
    """A parsed ``Budget`` (see ``budget_manifest``)."""
    return parse_budget(budget_manifest(name, limit, **spec))


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
    extra = {"maxRequestCost": max_request_cost} if max_request_cost is not None else {}
    return parse_burst_budget(
        burst_manifest(
            name, budget_name, amount, valid_from, valid_until, namespace=namespace, **extra
        )
    )
