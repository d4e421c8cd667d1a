"""Which budgets apply to a request, against an immutable compiled snapshot.

The rules (worked examples in ``docs/concepts.md``):

1. A budget matches when every scope field it sets equals the request's value.
2. User-level budgets (an explicit ``user``, or a ``user: "*"`` template) compete:
   among those that match with the same tenant, feature, model and period, only
   the most specific applies: explicit user (+ tier) > tier template > generic
   template. An enterprise user's own budget replaces the tier template.
3. Every other matching budget applies too (global, tenant, tier pool, feature,
   model), and the request must fit in all of them.

The snapshot is built once per config change (off the hot path) and indexed by
the shape of each scope, so resolving costs one dict lookup per distinct shape,
not a scan of every budget.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from budget_guard.domain.budget import USER_TEMPLATE, Budget, BurstPool, Scope
from budget_guard.domain.periods import Period

_RESOLUTION_CACHE_SIZE = 65_536

# A scope's shape: which of tenant, tier, feature, model it sets, and its user kind.
_USER_NONE, _USER_TEMPLATE, _USER_EXPLICIT = 0, 1, 2
_Shape = tuple[bool, int, bool, bool, bool]
_IndexKey = tuple[str | None, str | None, str | None, str | None, str | None]


class RequestIdentity(NamedTuple):  # per request: a NamedTuple is cheap to build
    """Who is asking and for what: the values a request is matched on."""

    tenant: str | None = None
    user: str | None = None
    tier: str | None = None
    feature: str | None = None
    model: str | None = None

    @property
    def attribution(self) -> Attribution:
        return Attribution(self.tenant, self.user, self.feature, self.model)


class Attribution(NamedTuple):  # per request: a NamedTuple is cheap to build
    """Who and what a request's spend is reported under, in chargeback."""

    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class AppliedBudget:
    """A budget that applies to a request; ``subject`` is the user a template charges."""

    budget: Budget
    subject: str | None = None


def _shape(scope: Scope) -> _Shape:
    user_kind = (
        _USER_NONE
        if scope.user is None
        else _USER_TEMPLATE
        if scope.user == USER_TEMPLATE
        else _USER_EXPLICIT
    )
    return (
        scope.tenant is not None,
        user_kind,
        scope.tier is not None,
        scope.feature is not None,
        scope.model is not None,
    )


def _index_key(scope: Scope) -> _IndexKey:
    return (scope.tenant, scope.user, scope.tier, scope.feature, scope.model)


def _lookup_key(shape: _Shape, identity: RequestIdentity) -> _IndexKey | None:
    """The index key a budget of ``shape`` matching ``identity`` would have, if any."""
    has_tenant, user_kind, has_tier, has_feature, has_model = shape
    values: list[str | None] = []
    for wanted, value in (
        (has_tenant, identity.tenant),
        (user_kind != _USER_NONE, identity.user),
        (has_tier, identity.tier),
        (has_feature, identity.feature),
        (has_model, identity.model),
    ):
        if wanted and value is None:
            return None
        values.append(value if wanted else None)
    if user_kind == _USER_TEMPLATE:
        values[1] = USER_TEMPLATE
    return (values[0], values[1], values[2], values[3], values[4])


@dataclass(frozen=True)
class Rejection:
    """A budget or burst pool left out of the snapshot, and why (for its status)."""

    id: str
    reason: str
    message: str


REASON_DUPLICATE_SCOPE = "DuplicateScope"
REASON_BUDGET_NOT_FOUND = "BudgetNotFound"


class BudgetSnapshot:
    """All budgets and burst pools of one config version, compiled for resolution.

    Immutable after construction; swap a whole new snapshot in on change.
    """

    def __init__(
        self,
        budgets: Iterable[Budget],
        pools: Iterable[BurstPool] = (),
        version: str = "",
    ) -> None:
        self.version = version
        accepted, rejections = _drop_duplicates(budgets)
        self.budgets: tuple[Budget, ...] = tuple(sorted(accepted, key=lambda b: b.ref))
        self._by_id: Mapping[str, Budget] = MappingProxyType({b.id: b for b in self.budgets})
        pools_by_budget: dict[str, list[BurstPool]] = defaultdict(list)
        for pool in sorted(pools, key=lambda p: (p.valid_until, p.ref)):
            if pool.budget.id in self._by_id:
                pools_by_budget[pool.budget.id].append(pool)
            else:
                rejections.append(
                    Rejection(
                        pool.id,
                        REASON_BUDGET_NOT_FOUND,
                        f"spec.budgetRef: LLMBudget {pool.budget.id} does not exist "
                        "(or is itself rejected)",
                    )
                )
        self.pools: tuple[BurstPool, ...] = tuple(
            pool for group in pools_by_budget.values() for pool in group
        )
        self._pools_by_budget: Mapping[str, tuple[BurstPool, ...]] = MappingProxyType(
            {budget_id: tuple(group) for budget_id, group in pools_by_budget.items()}
        )
        self.rejections: tuple[Rejection, ...] = tuple(rejections)
        index: dict[_IndexKey, list[Budget]] = defaultdict(list)
        shapes: set[_Shape] = set()
        for budget in self.budgets:
            index[_index_key(budget.scope)].append(budget)
            shapes.add(_shape(budget.scope))
        self._index = {key: tuple(group) for key, group in index.items()}
        self._shapes = tuple(sorted(shapes))
        self._cache: dict[RequestIdentity, tuple[AppliedBudget, ...]] = {}

    def budget(self, budget_id: str) -> Budget | None:
        return self._by_id.get(budget_id)

    def pools_for(self, budget_id: str) -> tuple[BurstPool, ...]:
        return self._pools_by_budget.get(budget_id, ())

    def active_pools(self, budget_id: str, instant: dt.datetime) -> tuple[BurstPool, ...]:
        return tuple(pool for pool in self.pools_for(budget_id) if pool.active_at(instant))

    def applicable(self, identity: RequestIdentity) -> tuple[AppliedBudget, ...]:
        """Every budget the request must fit in, most general first."""
        cached = self._cache.get(identity)
        if cached is not None:
            return cached
        resolved = self._resolve(identity)
        if len(self._cache) >= _RESOLUTION_CACHE_SIZE:
            self._cache.clear()
        self._cache[identity] = resolved
        return resolved

    def _resolve(self, identity: RequestIdentity) -> tuple[AppliedBudget, ...]:
        shared: list[Budget] = []
        best_user_level: dict[tuple[str | None, str | None, str | None, Period], Budget] = {}
        for shape in self._shapes:
            key = _lookup_key(shape, identity)
            if key is None:
                continue
            for budget in self._index.get(key, ()):
                scope = budget.scope
                if not scope.is_user_level:
                    shared.append(budget)
                    continue
                group = (scope.tenant, scope.feature, scope.model, budget.period)
                current = best_user_level.get(group)
                if current is None or scope.user_specificity > current.scope.user_specificity:
                    best_user_level[group] = budget
        applied = [AppliedBudget(budget) for budget in shared]
        applied.extend(
            AppliedBudget(budget, subject=identity.user) for budget in best_user_level.values()
        )
        applied.sort(key=lambda item: item.budget.ref)
        return tuple(applied)


def _drop_duplicates(budgets: Iterable[Budget]) -> tuple[list[Budget], list[Rejection]]:
    """Two budgets with the same scope and period: the older one stays in force."""
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    ordered = sorted(budgets, key=lambda b: (b.created_at or epoch, b.ref))
    kept: dict[tuple[Scope, Period], Budget] = {}
    rejections: list[Rejection] = []
    for budget in ordered:
        key = (budget.scope, budget.period)
        holder = kept.get(key)
        if holder is None:
            kept[key] = budget
            continue
        rejections.append(
            Rejection(
                budget.id,
                REASON_DUPLICATE_SCOPE,
                f"spec.scope: LLMBudget {holder.id} already covers scope "
                f"{budget.scope.describe()} with period {budget.period}; "
                "change the scope or period, or delete one of them",
            )
        )
    return list(kept.values()), rejections
