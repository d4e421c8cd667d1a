"""The status of each resource: from its validation, the published config, and spend.

Typed as the CRDs' status schema has it (``operator/crds.py`` documents every field;
a test checks that everything written here is in the schema). Pure functions: what to
write, given what is known. The status sync decides when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

from budget_guard.domain.anomaly import Anomaly
from budget_guard.domain.budget import HARD_LIMIT_PERCENT, Budget, BurstPool
from budget_guard.domain.forecast import Forecast
from budget_guard.domain.instants import rfc3339
from budget_guard.domain.money import format_usd, parse_usd
from budget_guard.domain.percent import percent_text
from budget_guard.domain.review import BudgetReview, CommitmentUse, PeriodHistory
from budget_guard.operator.compile import CompiledResources, Problem
from budget_guard.operator.conditions import (
    ACCEPTED,
    ALERTS_READY,
    ANOMALY_DETECTED,
    BELOW_THRESHOLDS,
    BURST_ACTIVE,
    BURST_POOL_ACTIVE,
    ENFORCED,
    EXHAUSTED,
    FORECAST_EXCEEDS_LIMIT,
    INSUFFICIENT_BASELINE,
    INSUFFICIENT_HISTORY,
    LEDGER_UNAVAILABLE,
    LIMIT_REACHED,
    NO_ACTIVE_BURST,
    NOT_PUBLISHED,
    PROJECTED_OVER_LIMIT,
    PROJECTED_WITHIN_LIMIT,
    PUBLISHED,
    READY,
    REJECTED,
    SOFT_LIMIT_REACHED,
    SPEND_JUMP,
    USUAL_SPEND,
    VALID,
    WITHIN_LIMIT,
    Condition,
    condition,
    threshold_reason,
)
from budget_guard.store.usage import BudgetUsage, PoolUsage


class BudgetState(StrEnum):
    """``status.state`` of an LLMBudget."""

    PENDING = "Pending"  # not enforced yet (this generation is not published)
    OK = "Ok"  # enforced, below its first soft threshold
    SOFT_LIMIT = "SoftLimit"  # past a soft threshold (status.thresholdReached says which)
    EXHAUSTED = "Exhausted"  # the limit is reached: requests are denied
    USERS_EXHAUSTED = "UsersExhausted"  # a per-user template: some users used their quota
    REJECTED = "Rejected"  # invalid: the Accepted condition says what to fix


class PoolPhase(StrEnum):
    """``status.phase`` of a BurstBudget."""

    PENDING = "Pending"  # before validFrom
    ACTIVE = "Active"
    EXHAUSTED = "Exhausted"  # its amount is spent
    EXPIRED = "Expired"  # past validUntil


class TopUser(TypedDict):
    user: str
    spent: str


class UsersStatus(TypedDict):
    tracked: int
    exhausted: int
    top: list[TopUser]


class PoolStatus(TypedDict):
    name: str
    amount: str
    used: str
    remaining: str
    validUntil: str


class ForecastStatus(TypedDict):
    summary: str  # the Forecast column
    spend: NotRequired[str]
    limitDate: NotRequired[str]
    basis: NotRequired[str]
    message: NotRequired[str]


class ReviewStatus(TypedDict):
    days: list[str]  # spend per local day of the period, from periodStart
    yearToDate: str
    previousPeriod: NotRequired[str]
    previousPeriodToDate: NotRequired[str]
    trend: str
    action: str


class CommitmentStatus(TypedDict):
    amount: str
    used: str
    utilization: str
    discount: str
    summary: str
    projectedUnused: NotRequired[str]


class LLMBudgetStatus(TypedDict):
    observedGeneration: int
    conditions: list[Condition]
    state: str  # a BudgetState
    summary: str  # the Status column: "SoftLimit 80%", "3 users exhausted", ...
    scopeSummary: str
    thresholdReached: NotRequired[int]  # 0, a soft threshold's percent, or 100
    periodKey: NotRequired[str]
    periodStart: NotRequired[str]
    resetsAt: NotRequired[str]
    effectiveLimit: NotRequired[str]
    spent: NotRequired[str]
    reserved: NotRequired[str]
    remaining: NotRequired[str]
    utilization: NotRequired[str]
    utilizationPercent: NotRequired[str]
    users: NotRequired[UsersStatus]
    forecast: NotRequired[ForecastStatus]
    review: NotRequired[ReviewStatus]
    commitment: NotRequired[CommitmentStatus]
    burstPools: NotRequired[list[PoolStatus]]


class BurstReview(TypedDict):
    spent: str
    requests: int
    peakDay: str
    peakDaySpent: str
    approvedBy: str
    reason: str
    endedAt: str


class BurstBudgetStatus(TypedDict):
    observedGeneration: int
    conditions: list[Condition]
    phase: NotRequired[str]  # a PoolPhase
    spent: NotRequired[str]
    remaining: NotRequired[str]
    requests: NotRequired[int]
    review: NotRequired[BurstReview]


@dataclass(frozen=True)
class Insight:
    """What the history says of a budget: its review (the forecast in it) and whether its
    spend just jumped."""

    review: BudgetReview
    anomaly: Anomaly


@dataclass(frozen=True)
class AlertState:
    ok: bool
    reason: str
    message: str


def threshold_reached(status: Mapping[str, Any]) -> int:
    """The highest crossing a written status shows (0 none, 100 exhausted)."""
    value = status.get("thresholdReached", 0)
    return value if isinstance(value, int) else 0


def _previous(manifest: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return list((manifest.get("status") or {}).get("conditions") or [])


def _generation(manifest: Mapping[str, Any]) -> int:
    return int(manifest.get("metadata", {}).get("generation") or 0)


def _reached(budget: Budget, usage: BudgetUsage) -> int | None:
    amounts = budget.threshold_amounts(usage.effective_limit)
    reached = [p for p, a in zip(budget.thresholds, amounts, strict=True) if usage.used >= a]
    return max(reached) if reached else None


def _exhausted(usage: BudgetUsage) -> bool:
    return usage.used >= usage.effective_limit or usage.reported_percent >= HARD_LIMIT_PERCENT


def pool_phase(pool: BurstPool, usage: PoolUsage | None, now: dt.datetime) -> PoolPhase:
    if now < pool.valid_from:
        return PoolPhase.PENDING
    if usage is not None and (
        usage.exhausted_at_ms is not None or usage.used >= pool.amount_micros
    ):
        return PoolPhase.EXHAUSTED
    if now >= pool.valid_until:
        return PoolPhase.EXPIRED
    return PoolPhase.ACTIVE


ConditionFor = Callable[[str, bool, str, str], Condition]


def budget_status(
    key: str,
    compiled: CompiledResources,
    published: Mapping[str, int],
    usage: BudgetUsage | None,
    alerts: AlertState | None,
    now: dt.datetime,
    insight: Insight | None = None,
) -> LLMBudgetStatus:
    """The whole status of the LLMBudget ``key`` (namespace/name)."""
    manifest = compiled.manifests[key]
    generation = _generation(manifest)
    previous = _previous(manifest)
    problem: Problem | None = compiled.problems.get(key)
    budget = compiled.budgets.get(key)
    in_force = budget is not None and published.get(key) == generation

    def cond(kind: str, true: bool, reason: str, message: str) -> Condition:
        return condition(kind, true, reason, message, generation, previous, now)

    state = (
        BudgetState.REJECTED if problem else (BudgetState.OK if in_force else BudgetState.PENDING)
    )
    status: LLMBudgetStatus = {
        "observedGeneration": generation,
        "conditions": _validity_conditions(problem, in_force, cond),
        "state": state.value,
        "summary": state.value,
        "scopeSummary": compiled.scope_summary(key),
    }
    if budget is not None and usage is not None:
        _add_spend(status, budget, usage)
        status["conditions"] += _spend_conditions(budget, usage, cond)
        if in_force:
            _add_state(status, budget, usage)
        if insight is not None:
            status["conditions"] += _add_insight(status, insight, cond)
    if alerts is not None:
        status["conditions"].append(cond(ALERTS_READY, alerts.ok, alerts.reason, alerts.message))
    return status


def _validity_conditions(
    problem: Problem | None, in_force: bool, cond: ConditionFor
) -> list[Condition]:
    accepted = (
        cond(ACCEPTED, False, problem.reason, problem.message)
        if problem is not None
        else cond(ACCEPTED, True, VALID, "the budget is valid")
    )
    if in_force:
        enforced_reason, enforced_message = PUBLISHED, "the webhooks enforce this generation"
    elif problem is not None:
        enforced_reason, enforced_message = REJECTED, "not enforced: " + problem.message
    else:
        enforced_reason, enforced_message = NOT_PUBLISHED, "not published yet"
    return [
        accepted,
        cond(ENFORCED, in_force, enforced_reason, enforced_message),
        cond(
            READY,
            in_force,
            READY if in_force else NOT_PUBLISHED,
            "accepted and enforced" if in_force else "not ready",
        ),
    ]


def _add_spend(status: LLMBudgetStatus, budget: Budget, usage: BudgetUsage) -> None:
    window = usage.window
    status["periodKey"] = window.key
    status["periodStart"] = rfc3339(window.start)
    status["resetsAt"] = rfc3339(window.end)
    status["effectiveLimit"] = format_usd(usage.effective_limit)
    if budget.scope.is_user_template:
        status["users"] = {
            "tracked": usage.users_tracked,
            "exhausted": usage.users_exhausted,
            "top": [{"user": user, "spent": format_usd(used)} for user, used in usage.top_users],
        }
    else:
        status["spent"] = format_usd(usage.spent)
        status["reserved"] = format_usd(usage.reserved)
        status["remaining"] = format_usd(usage.remaining)
        status["utilization"] = f"{usage.utilization:.4f}"
        status["utilizationPercent"] = f"{usage.utilization * 100:.1f}%"
    if usage.pools:
        status["burstPools"] = [
            {
                "name": pool.pool.ref.name,
                "amount": format_usd(pool.pool.amount_micros),
                "used": format_usd(pool.used),
                "remaining": format_usd(pool.remaining),
                "validUntil": rfc3339(pool.pool.valid_until),
            }
            for pool in usage.pools
        ]


def _add_state(status: LLMBudgetStatus, budget: Budget, usage: BudgetUsage) -> None:
    if budget.scope.is_user_template:
        exhausted = usage.users_exhausted
        state = BudgetState.USERS_EXHAUSTED if exhausted else BudgetState.OK
        status["state"] = state.value
        status["summary"] = f"{exhausted} users exhausted" if exhausted else state.value
        return
    reached = _reached(budget, usage)
    if _exhausted(usage):
        status["state"] = status["summary"] = BudgetState.EXHAUSTED.value
        status["thresholdReached"] = HARD_LIMIT_PERCENT
    elif reached is not None:
        status["state"] = BudgetState.SOFT_LIMIT.value
        status["summary"] = f"SoftLimit {reached}%"
        status["thresholdReached"] = reached
    else:
        status["thresholdReached"] = 0


def _spend_conditions(budget: Budget, usage: BudgetUsage, cond: ConditionFor) -> list[Condition]:
    period = budget.period.value.lower()
    if budget.scope.is_user_template:
        exhausted = usage.users_exhausted
        return [
            cond(
                EXHAUSTED,
                exhausted > 0,
                LIMIT_REACHED if exhausted else WITHIN_LIMIT,
                f"{exhausted} of {usage.users_tracked} users have used their {period} quota",
            ),
        ]
    reached = _reached(budget, usage)
    used, limit = format_usd(usage.used), format_usd(usage.effective_limit)
    exhausted = _exhausted(usage)
    active_pools = [p.pool.ref.name for p in usage.pools if p.activated_at_ms and p.remaining > 0]
    return [
        cond(
            SOFT_LIMIT_REACHED,
            reached is not None,
            threshold_reason(reached) if reached is not None else BELOW_THRESHOLDS,
            f"{reached}% of the {period} limit used (${used} of ${limit})"
            if reached is not None
            else f"${used} of ${limit} used this {period} period",
        ),
        cond(
            EXHAUSTED,
            exhausted,
            LIMIT_REACHED if exhausted else WITHIN_LIMIT,
            f"${used} of ${limit} used; requests are denied until {rfc3339(usage.window.end)}"
            if exhausted
            else f"${format_usd(usage.remaining)} left",
        ),
        cond(
            BURST_ACTIVE,
            bool(active_pools),
            BURST_POOL_ACTIVE if active_pools else NO_ACTIVE_BURST,
            f"drawing from {', '.join(active_pools)}" if active_pools else "no burst pool in use",
        ),
    ]


def _add_insight(status: LLMBudgetStatus, insight: Insight, cond: ConditionFor) -> list[Condition]:
    """The review, forecast and commitment figures; the forecast and anomaly conditions."""
    review, anomaly = insight.review, insight.anomaly
    history = review.history
    status["review"] = {
        "days": [format_usd(spent) for _, spent in history.days],
        "yearToDate": format_usd(history.year_to_date),
        "trend": review.trend.text,
        "action": review.action.text,
    }
    if history.previous_spent is not None and history.previous_to_date is not None:
        status["review"]["previousPeriod"] = format_usd(history.previous_spent)
        status["review"]["previousPeriodToDate"] = format_usd(history.previous_to_date)
    use = review.commitment_use
    if use is not None:
        status["commitment"] = commitment_status(use)
    conditions = [
        cond(
            ANOMALY_DETECTED,
            anomaly.detected,
            SPEND_JUMP
            if anomaly.detected
            else (USUAL_SPEND if anomaly.enough_history else INSUFFICIENT_BASELINE),
            anomaly.message,
        )
    ]
    forecast = review.forecast
    if forecast is None:  # a per-user template: each user has a limit of their own
        return conditions
    if forecast.projected_micros is None:
        status["forecast"] = {"summary": "n/a", "message": forecast.message}
        conditions.append(
            cond(FORECAST_EXCEEDS_LIMIT, False, INSUFFICIENT_HISTORY, forecast.message)
        )
        return conditions
    projected, limit = format_usd(forecast.projected_micros), format_usd(forecast.limit_micros)
    last_day = forecast.last_day.isoformat() if forecast.last_day else "the period's end"
    status["forecast"] = {"summary": f"${projected}", "spend": projected, "basis": forecast.basis}
    reached = review.spent_micros >= forecast.limit_micros
    if forecast.limit_day is not None and not reached:
        limit_day = forecast.limit_day.isoformat()
        status["forecast"]["limitDate"] = limit_day
        status["forecast"]["summary"] = f"${projected}, limit on {limit_day}"
        conditions.append(
            cond(
                FORECAST_EXCEEDS_LIMIT,
                True,
                PROJECTED_OVER_LIMIT,
                f"projected to reach the ${limit} limit on {limit_day}, "
                f"{forecast.days_left_at_limit} days before the period ends: ${projected} by "
                f"{last_day} ({forecast.basis})",
            )
        )
    elif reached:
        conditions.append(
            cond(
                FORECAST_EXCEEDS_LIMIT,
                False,
                LIMIT_REACHED,
                f"the ${limit} limit is reached this period; ${projected} projected by {last_day}",
            )
        )
    else:
        conditions.append(
            cond(
                FORECAST_EXCEEDS_LIMIT,
                False,
                PROJECTED_WITHIN_LIMIT,
                f"${projected} projected by {last_day}, within the ${limit} limit "
                f"({forecast.basis})",
            )
        )
    return conditions


def _usd(value: object, field: str) -> int:
    return parse_usd(str(value), field, allow_zero=True)


def _instant(value: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def review_from_status(budget: Budget, status: Mapping[str, Any]) -> BudgetReview | None:
    """The review a status holds (what ``_add_insight`` wrote), for reports read from the
    cluster; None when it holds none (not enforced yet, or no sync since)."""
    review = status.get("review")
    if not isinstance(review, Mapping) or "periodStart" not in status:
        return None
    first = _instant(status["periodStart"]).astimezone(budget.zone).date()
    previous, previous_to_date = review.get("previousPeriod"), review.get("previousPeriodToDate")
    history = PeriodHistory(
        days=tuple(
            (first + dt.timedelta(days=n), _usd(value, "status.review.days"))
            for n, value in enumerate(review.get("days", []))
        ),
        year_to_date=_usd(review.get("yearToDate", "0"), "status.review.yearToDate"),
        previous_spent=None if previous is None else _usd(previous, "previousPeriod"),
        previous_to_date=None
        if previous_to_date is None
        else _usd(previous_to_date, "previousPeriodToDate"),
    )
    allocated = _usd(status.get("effectiveLimit", "0"), "status.effectiveLimit")
    per_user = budget.scope.is_user_template
    return BudgetReview(
        budget_id=budget.id,
        scope=budget.scope.describe(),
        period=budget.period.value,
        period_key=str(status.get("periodKey", "")),
        enforces=budget.enforces,
        per_user=per_user,
        allocated_micros=allocated,
        spent_micros=history.period_spent
        if per_user
        else _usd(status.get("spent", "0"), "status.spent"),
        history=history,
        forecast=_forecast_from_status(budget, status, allocated),
        users_exhausted=int((status.get("users") or {}).get("exhausted", 0)),
        commitment=budget.commitment,
        anomaly=any(
            cond.get("type") == ANOMALY_DETECTED and cond.get("status") == "True"
            for cond in status.get("conditions", [])
        ),
        limit_reached=threshold_reached(status) >= HARD_LIMIT_PERCENT,
    )


def _forecast_from_status(
    budget: Budget, status: Mapping[str, Any], allocated: int
) -> Forecast | None:
    written = status.get("forecast")
    if not isinstance(written, Mapping):
        return None
    resets = status.get("resetsAt")
    last_day = (
        (_instant(resets) - dt.timedelta(microseconds=1)).astimezone(budget.zone).date()
        if resets
        else None
    )
    spend, limit_day = written.get("spend"), written.get("limitDate")
    return Forecast(
        projected_micros=None if spend is None else _usd(spend, "status.forecast.spend"),
        limit_micros=allocated,
        limit_day=dt.date.fromisoformat(str(limit_day)) if limit_day else None,
        last_day=last_day,
        basis=str(written.get("basis", "")),
        message=str(written.get("message", "")),
    )


def commitment_status(use: CommitmentUse) -> CommitmentStatus:
    status: CommitmentStatus = {
        "amount": format_usd(use.commitment.amount_micros),
        "used": format_usd(use.spent_micros),
        "utilization": percent_text(use.utilization),
        "discount": format_usd(use.discount_micros),
        "summary": use.summary,
    }
    if use.projected_unused_micros is not None:
        status["projectedUnused"] = format_usd(use.projected_unused_micros)
    return status


def burst_status(
    key: str,
    compiled: CompiledResources,
    usage: PoolUsage | None,
    review: BurstReview | None,
    now: dt.datetime,
) -> BurstBudgetStatus:
    manifest = compiled.manifests[key]
    generation = _generation(manifest)
    previous = _previous(manifest)
    problem = compiled.problems.get(key)
    pool = compiled.pools.get(key)
    accepted = (
        condition(ACCEPTED, False, problem.reason, problem.message, generation, previous, now)
        if problem is not None
        else condition(ACCEPTED, True, VALID, "the burst pool is valid", generation, previous, now)
    )
    status: BurstBudgetStatus = {"observedGeneration": generation, "conditions": [accepted]}
    if pool is None:
        return status
    status["phase"] = pool_phase(pool, usage, now).value
    status["spent"] = format_usd(usage.used if usage else 0)
    status["remaining"] = format_usd(usage.remaining if usage else pool.amount_micros)
    status["requests"] = usage.requests if usage else 0
    if review is not None:
        status["review"] = review
    return status


LEDGER_CONDITIONS = (ACCEPTED, ENFORCED, READY)


def ledger_unavailable_status(
    key: str, compiled: CompiledResources, message: str, now: dt.datetime
) -> dict[str, Any]:
    """What a resource's status says while the ledger cannot be reached: Accepted from
    the spec (validation needs no Redis), and for an LLMBudget Enforced and Ready False
    with reason LedgerUnavailable; its other conditions and figures stay as last known.
    A merge patch: the fields it leaves out keep their values."""
    manifest = compiled.manifests[key]
    generation = _generation(manifest)
    previous = _previous(manifest)
    problem = compiled.problems.get(key)

    def cond(kind: str, true: bool, reason: str, text: str) -> Condition:
        return condition(kind, true, reason, text, generation, previous, now)

    what = "budget" if manifest.get("kind") == "LLMBudget" else "burst pool"
    accepted = (
        cond(ACCEPTED, False, problem.reason, problem.message)
        if problem is not None
        else cond(ACCEPTED, True, VALID, f"the {what} is valid")
    )
    kept = [c for c in previous if c.get("type") not in LEDGER_CONDITIONS]
    if manifest.get("kind") != "LLMBudget":
        return {"observedGeneration": generation, "conditions": [accepted, *kept]}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [
            accepted,
            cond(ENFORCED, False, LEDGER_UNAVAILABLE, message),
            cond(READY, False, LEDGER_UNAVAILABLE, message),
            *kept,
        ],
        "summary": LEDGER_UNAVAILABLE,
        "scopeSummary": compiled.scope_summary(key),
    }
    if problem is not None:
        status["state"] = status["summary"] = BudgetState.REJECTED.value
    elif not (manifest.get("status") or {}).get("state"):
        status["state"] = BudgetState.PENDING.value
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
