"""From the resources in the cluster to one configuration: what is accepted, what is
not and why. Pure: the controller reads the resources and publishes the result."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from budget_guard.domain.budget import SCOPE_FIELDS, Budget, BurstPool, Scope
from budget_guard.domain.manifest import ManifestError, parse_budget, parse_burst_budget
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.operator.conditions import (
    INVALID_SPEC,
    INVALID_TIME_ZONE,
)

Manifest = Mapping[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class CompiledResources:
    snapshot: BudgetSnapshot
    budgets: dict[str, Budget]  # accepted, by namespace/name
    pools: dict[str, BurstPool]  # accepted, by namespace/name
    problems: dict[str, Problem]  # rejected budgets and pools, by namespace/name
    manifests: dict[str, Manifest]  # every live resource seen, by namespace/name
    generations: dict[str, int] = field(default_factory=dict)  # accepted ones, as published

    def scope_summary(self, key: str) -> str:
        """The Scope column: the parsed scope, or the written one of a rejected budget."""
        budget = self.budgets.get(key)
        if budget is not None:
            return budget.scope.describe()
        written = self.manifests[key].get("spec", {}).get("scope") or {}
        return Scope(**{k: written.get(k) for k in SCOPE_FIELDS}).describe()

    def publishable(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The accepted manifests, trimmed to what the webhooks need."""
        return (
            [_published(self.manifests[key]) for key in sorted(self.budgets)],
            [_published(self.manifests[key]) for key in sorted(self.pools)],
        )


_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)


def trim(resource: Manifest) -> dict[str, Any]:
    """What the operator keeps of a listed resource: no managedFields, no annotations."""
    metadata = resource.get("metadata", {})
    return {
        "apiVersion": resource.get("apiVersion"),
        "kind": resource.get("kind"),
        "metadata": {k: metadata[k] for k in _KEPT_METADATA if k in metadata},
        "spec": resource.get("spec", {}),
        "status": resource.get("status", {}),
    }


def key_of(manifest: Manifest) -> str:
    """namespace/name: how the operator names a resource."""
    metadata = manifest.get("metadata", {})
    return f"{metadata.get('namespace', 'default')}/{metadata.get('name', '?')}"


def _published(manifest: Manifest) -> dict[str, Any]:
    """What the webhooks get of an accepted resource: no status (live ones only)."""
    return {name: value for name, value in trim(manifest).items() if name != "status"}


def _problem(error: ManifestError) -> Problem:
    reason = INVALID_TIME_ZONE if error.field == "spec.timeZone" else INVALID_SPEC
    return Problem(reason, str(error))


def _parse_live(
    resources: Iterable[Manifest],
    parse: Callable[[Manifest], T],
    manifests: dict[str, Manifest],
    problems: dict[str, Problem],
) -> list[T]:
    """Parse each resource not being deleted; record it, and its problem if any."""
    parsed: list[T] = []
    for manifest in resources:
        if manifest.get("metadata", {}).get("deletionTimestamp"):
            continue
        key = key_of(manifest)
        manifests[key] = manifest
        try:
            parsed.append(parse(manifest))
        except ManifestError as error:
            problems[key] = _problem(error)
    return parsed


def compile_resources(budgets: Iterable[Manifest], bursts: Iterable[Manifest]) -> CompiledResources:
    """Validate every live resource (ones being deleted are left out) and compile."""
    manifests: dict[str, Manifest] = {}
    problems: dict[str, Problem] = {}
    parsed_budgets = _parse_live(budgets, parse_budget, manifests, problems)
    parsed_pools = _parse_live(bursts, parse_burst_budget, manifests, problems)
    snapshot = BudgetSnapshot(parsed_budgets, parsed_pools)
    for rejection in snapshot.rejections:
        problems[rejection.id] = Problem(rejection.reason, rejection.message)
    accepted = {budget.id: budget for budget in snapshot.budgets}
    pools = {pool.id: pool for pool in snapshot.pools}
    return CompiledResources(
        snapshot=snapshot,
        budgets=accepted,
        pools=pools,
        problems=problems,
        manifests=manifests,
        generations={
            **{key: budget.generation for key, budget in accepted.items()},
            **{key: pool.generation for key, pool in pools.items()},
        },
    )
