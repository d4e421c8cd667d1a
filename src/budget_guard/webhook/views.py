"""``GET /v1/budgets``: every budget in force and where it stands, as JSON."""

from __future__ import annotations

from typing import Any

from budget_guard.domain.instants import rfc3339
from budget_guard.domain.money import format_usd
from budget_guard.store.usage import BudgetUsage
from budget_guard.webhook.active_config import ActiveConfig


def budget_status(usage: BudgetUsage) -> str:
    budget = usage.budget
    if budget.scope.is_user_template:
        return f"{usage.users_exhausted} users exhausted" if usage.users_exhausted else "Ok"
    if usage.used >= usage.effective_limit or usage.reported_percent >= 100:
        return "Exhausted"
    reached = [
        percent
        for percent, amount in zip(
            budget.thresholds, budget.threshold_amounts(usage.effective_limit), strict=True
        )
        if usage.used >= amount
    ]
    return f"SoftLimit {max(reached)}%" if reached else "Ok"


def budget_view(usage: BudgetUsage) -> dict[str, Any]:
    budget, window = usage.budget, usage.window
    view: dict[str, Any] = {
        "name": budget.ref.name,
        "namespace": budget.ref.namespace,
        "scope": {
            name: value
            for name in ("tenant", "user", "tier", "feature", "model")
            if (value := getattr(budget.scope, name)) is not None
        },
        "period": budget.period.value,
        "periodKey": window.key,
        "timeZone": budget.zone.key,
        "enforcement": budget.enforcement.value,
        "failureMode": budget.failure_mode.value,
        "reservation": budget.reservation.value,
        "limitUsd": format_usd(budget.limit_micros),
        "effectiveLimitUsd": format_usd(usage.effective_limit),
        "periodStart": rfc3339(window.start),
        "resetsAt": rfc3339(window.end),
        "status": budget_status(usage),
    }
    if budget.scope.is_user_template:
        view |= {
            "usersTracked": usage.users_tracked,
            "usersExhausted": usage.users_exhausted,
            "topUsers": [
                {"user": user, "usedUsd": format_usd(used)} for user, used in usage.top_users
            ],
        }
    else:
        view |= {
            "spentUsd": format_usd(usage.spent),
            "reservedUsd": format_usd(usage.reserved),
            "usedUsd": format_usd(usage.used),
            "leasedUsd": format_usd(usage.leased),
            "remainingUsd": format_usd(usage.remaining),
            "utilization": round(usage.utilization, 4),
            "requests": usage.requests,
            "denied": usage.denied,
            "wouldDeny": usage.would_deny,
        }
    if usage.pools:
        view["burstPools"] = [
            {
                "name": pool.pool.ref.name,
                "amountUsd": format_usd(pool.pool.amount_micros),
                "usedUsd": format_usd(pool.used),
                "remainingUsd": format_usd(pool.remaining),
                "validFrom": rfc3339(pool.pool.valid_from),
                "validUntil": rfc3339(pool.pool.valid_until),
                "approvedBy": pool.pool.approved_by,
            }
            for pool in usage.pools
        ]
    return view


def budgets_document(
    config: ActiveConfig, usages: list[BudgetUsage], *, rejections: bool = True
) -> dict[str, Any]:
    """``rejections``: list the manifests the configuration refused (an admin's view;
    they name budgets of any tenant)."""
    rejected = config.snapshot.rejections if rejections else ()
    return {
        "configVersion": config.version,
        "source": config.source,
        "budgets": [budget_view(usage) for usage in usages],
        "rejected": [{"id": r.id, "reason": r.reason, "message": r.message} for r in rejected],
    }
