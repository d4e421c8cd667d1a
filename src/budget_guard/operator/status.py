"""The status of each resource: from its validation, the published config, and spend.

Pure functions: what to write, given what is known. The controller decides when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.money import format_usd
from budget_guard.operator import conditions as c
from budget_guard.operator.compile import Compiled, Problem
from budget_guard.store.usage import BudgetUsage, PoolUsage


@dataclass(frozen=True)
class AlertState:
    ok: bool
    reason: str
    message: str


def _scope_summary(budget_manifest: Mapping[str, Any]) -> str:
    scope = budget_manifest.get("spec", {}).get("scope") or {}
    parts = [
        f"{k}={scope[k]}" for k in ("tenant", "user", "tier", "feature", "model") if scope.get(k)
    ]
    return ",".join(parts) or "global"


def _previous(manifest: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return list((manifest.get("status") or {}).get("conditions") or [])


def _generation(manifest: Mapping[str, Any]) -> int:
    return int(manifest.get("metadata", {}).get("generation") or 0)


def _reached(budget: Budget, usage: BudgetUsage) -> int | None:
    amounts = budget.threshold_amounts(usage.effective_limit)
    reached = [p for p, a in zip(budget.thresholds, amounts, strict=True) if usage.used >= a]
    return max(reached) if reached else None


def reached_percent(status: Mapping[str, Any]) -> int:
    """The highest crossing a status shows: 100 when exhausted, else the soft threshold."""
    reasons = {
        cond.get("type"): (cond.get("status"), str(cond.get("reason", "")))
        for cond in status.get("conditions") or []
    }
    if reasons.get(c.EXHAUSTED, ("", ""))[0] == "True":
        return 100
    state, reason = reasons.get(c.SOFT_LIMIT_REACHED, ("", ""))
    if state == "True" and reason.startswith("Threshold") and reason.endswith("Reached"):
        digits = reason.removeprefix("Threshold").removesuffix("Reached")
        return int(digits) if digits.isdigit() else 0
    return 0


def pool_phase(pool: BurstPool, usage: PoolUsage | None, now: dt.datetime) -> str:
    if now < pool.valid_from:
        return "Pending"
    if usage is not None and (
        usage.exhausted_at_ms is not None or usage.used >= pool.amount_micros
    ):
        return "Exhausted"
    if now >= pool.valid_until:
        return "Expired"
    return "Active"


def budget_status(
    key: str,
    compiled: Compiled,
    published: Mapping[str, int],
    usage: BudgetUsage | None,
    alerts: AlertState | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The whole status of the LLMBudget ``key`` (namespace/name)."""
    manifest = compiled.manifests[key]
    generation = _generation(manifest)
    previous = _previous(manifest)
    problem: Problem | None = compiled.problems.get(key)
    budget = compiled.budgets.get(key)
    in_force = budget is not None and published.get(key) == generation

    def cond(kind: str, true: bool, reason: str, message: str) -> dict[str, Any]:
        return c.condition(kind, true, reason, message, generation, previous, now)

    conditions = [
        cond(c.ACCEPTED, False, problem.reason, problem.message)
        if problem is not None
        else cond(c.ACCEPTED, True, c.VALID, "the budget is valid"),
        cond(
            c.ENFORCED,
            in_force,
            c.PUBLISHED if in_force else (c.REJECTED if problem else c.NOT_PUBLISHED),
            "the webhooks enforce this generation"
            if in_force
            else ("not enforced: " + problem.message if problem else "not published yet"),
        ),
        cond(
            c.READY,
            in_force,
            c.READY if in_force else c.NOT_PUBLISHED,
            "accepted and enforced" if in_force else "not ready",
        ),
    ]
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "scopeSummary": _scope_summary(manifest),
        "state": "Rejected" if problem else ("Ok" if in_force else "Pending"),
    }
    if budget is not None and usage is not None:
        status |= _spend(budget, usage)
        conditions += _spend_conditions(budget, usage, cond)
        status["state"] = _state(budget, usage) if in_force else "Pending"
    if alerts is not None:
        conditions.append(cond(c.ALERTS_READY, alerts.ok, alerts.reason, alerts.message))
    status["conditions"] = conditions
    return status


def _spend(budget: Budget, usage: BudgetUsage) -> dict[str, Any]:
    window = usage.window
    fields: dict[str, Any] = {
        "periodKey": window.key,
        "periodStart": c.rfc3339(window.start),
        "resetsAt": c.rfc3339(window.end),
        "effectiveLimit": format_usd(usage.effective_limit),
    }
    if budget.scope.is_user_template:
        fields["users"] = {
            "tracked": usage.users_tracked,
            "exhausted": usage.users_exhausted,
            "top": [{"user": user, "spent": format_usd(used)} for user, used in usage.top_users],
        }
    else:
        fields |= {
            "spent": format_usd(usage.spent),
            "reserved": format_usd(usage.reserved),
            "remaining": format_usd(usage.remaining),
            "utilization": f"{usage.utilization:.4f}",
            "utilizationPercent": f"{usage.utilization * 100:.1f}%",
        }
    if usage.pools:
        fields["burstPools"] = [
            {
                "name": pool.pool.ref.name,
                "amount": format_usd(pool.pool.amount_micros),
                "used": format_usd(pool.used),
                "remaining": format_usd(pool.remaining),
                "validUntil": c.rfc3339(pool.pool.valid_until),
            }
            for pool in usage.pools
        ]
    return fields


def _spend_conditions(budget: Budget, usage: BudgetUsage, cond: Any) -> list[dict[str, Any]]:
    period = budget.period.value.lower()
    if budget.scope.is_user_template:
        exhausted = usage.users_exhausted
        return [
            cond(
                c.EXHAUSTED,
                exhausted > 0,
                c.LIMIT_REACHED if exhausted else c.WITHIN_LIMIT,
                f"{exhausted} of {usage.users_tracked} users have used their {period} quota",
            ),
        ]
    reached = _reached(budget, usage)
    used, limit = format_usd(usage.used), format_usd(usage.effective_limit)
    exhausted = usage.used >= usage.effective_limit or usage.reported_percent >= 100
    active_pools = [p.pool.ref.name for p in usage.pools if p.activated_at_ms and p.remaining > 0]
    return [
        cond(
            c.SOFT_LIMIT_REACHED,
            reached is not None,
            c.threshold_reason(reached) if reached is not None else c.BELOW_THRESHOLDS,
            f"{reached}% of the {period} limit used (${used} of ${limit})"
            if reached is not None
            else f"${used} of ${limit} used this {period} period",
        ),
        cond(
            c.EXHAUSTED,
            exhausted,
            c.LIMIT_REACHED if exhausted else c.WITHIN_LIMIT,
            f"${used} of ${limit} used; requests are denied until {c.rfc3339(usage.window.end)}"
            if exhausted
            else f"${format_usd(usage.remaining)} left",
        ),
        cond(
            c.BURST_ACTIVE,
            bool(active_pools),
            c.BURST_POOL_ACTIVE if active_pools else c.NO_ACTIVE_BURST,
            f"drawing from {', '.join(active_pools)}" if active_pools else "no burst pool in use",
        ),
    ]


def _state(budget: Budget, usage: BudgetUsage) -> str:
    if budget.scope.is_user_template:
        exhausted = usage.users_exhausted
        return f"{exhausted} users exhausted" if exhausted else "Ok"
    if usage.used >= usage.effective_limit or usage.reported_percent >= 100:
        return "Exhausted"
    reached = _reached(budget, usage)
    return f"SoftLimit {reached}%" if reached is not None else "Ok"


def burst_status(
    key: str,
    compiled: Compiled,
    usage: PoolUsage | None,
    review: Mapping[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    manifest = compiled.manifests[key]
    generation = _generation(manifest)
    previous = _previous(manifest)
    problem = compiled.problems.get(key)
    pool = compiled.pools.get(key)
    accepted = (
        c.condition(c.ACCEPTED, False, problem.reason, problem.message, generation, previous, now)
        if problem is not None
        else c.condition(
            c.ACCEPTED, True, c.VALID, "the burst pool is valid", generation, previous, now
        )
    )
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": [accepted]}
    if pool is None:
        return status
    status["phase"] = pool_phase(pool, usage, now)
    status["spent"] = format_usd(usage.used if usage else 0)
    status["remaining"] = format_usd(usage.remaining if usage else pool.amount_micros)
    status["requests"] = usage.requests if usage else 0
    if review is not None:
        status["review"] = dict(review)
    return status


def changed(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Would writing ``wanted`` change the status (ignoring transition times)?"""
    current = current or {}

    def strip(status: Mapping[str, Any]) -> dict[str, Any]:
        stripped = dict(status)
        stripped["conditions"] = [
            {k: v for k, v in cond.items() if k != "lastTransitionTime"}
            for cond in status.get("conditions", [])
        ]
        return stripped

    have = strip(current)
    return any(have.get(name) != value for name, value in strip(wanted).items())
