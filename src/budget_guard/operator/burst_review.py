"""The review of a burst pool once it has ended (exhausted or expired): what it paid
for, the budget's busiest day in its window, who approved it and why. Computed once,
then kept in the BurstBudget's status."""

from __future__ import annotations

import datetime as dt
from typing import cast

from redis.asyncio import Redis

from budget_guard.domain.instants import rfc3339
from budget_guard.domain.money import format_usd
from budget_guard.operator.compile import CompiledResources
from budget_guard.operator.status import BurstReview, PoolPhase, pool_phase
from budget_guard.store.keys import KeySchema
from budget_guard.store.usage import PoolUsage, read_daily_spend


class BurstReviews:
    def __init__(self, redis: Redis, keys: KeySchema) -> None:
        self._redis = redis
        self._keys = keys
        self._computed: dict[str, BurstReview] = {}

    async def review(
        self, key: str, compiled: CompiledResources, usage: PoolUsage | None, now: dt.datetime
    ) -> BurstReview | None:
        """The review of pool ``key``, or None while it is still pending or active."""
        pool = compiled.pools.get(key)
        if pool is None:
            return None
        written = (compiled.manifests[key].get("status") or {}).get("review")
        if written:
            return cast(BurstReview, dict(written))
        if pool_phase(pool, usage, now) not in (PoolPhase.EXHAUSTED, PoolPhase.EXPIRED):
            return None
        if key in self._computed:
            return self._computed[key]
        budget = compiled.budgets.get(pool.budget.id)
        end = min(now, pool.valid_until)
        daily = (
            await read_daily_spend(self._redis, budget, pool.valid_from, end, self._keys)
            if budget is not None
            else {}
        )
        peak_day, peak_spend = max(daily.items(), key=lambda item: item[1], default=("", 0))
        review = BurstReview(
            spent=format_usd(usage.used if usage else 0),
            requests=usage.requests if usage else 0,
            peakDay=str(peak_day),
            peakDaySpent=format_usd(peak_spend),
            approvedBy=pool.approved_by,
            reason=pool.reason,
            endedAt=rfc3339(end),
        )
        self._computed[key] = review
        return review
