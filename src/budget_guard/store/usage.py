"""Where every budget stands now: one pipelined read for a whole snapshot.

Used by the webhook's ``GET /v1/budgets`` and by the operator's status sync.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.periods import PeriodWindow
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import KeySchema

TOP_USERS = 5
_COUNTER_FIELDS = ("used", "spent", "requests", "denied", "would_deny", "hwm", "leased")
_POOL_FIELDS = ("used", "spent", "requests", "activated", "exhausted")


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class PoolUsage:
    pool: BurstPool
    used: int
    spent: int
    requests: int
    activated_at_ms: int | None
    exhausted_at_ms: int | None

    @property
    def remaining(self) -> int:
        return max(0, self.pool.amount_micros - self.used)


@dataclass(frozen=True)
class BudgetUsage:
    """A budget in its current period. For a per-user template, ``used`` and its
    siblings are zero and the ``users_*`` fields describe the users instead."""

    budget: Budget
    window: PeriodWindow
    effective_limit: int
    used: int = 0  # spent + reserved by requests
    leased: int = 0  # taken ahead by webhook processes, not yet assigned to requests
    spent: int = 0
    requests: int = 0
    denied: int = 0
    would_deny: int = 0
    reported_percent: int = 0  # the highest threshold reported this period (100 = exhausted)
    users_tracked: int = 0
    top_users: tuple[tuple[str, int], ...] = ()
    users_exhausted: int = 0
    pools: tuple[PoolUsage, ...] = ()

    @property
    def reserved(self) -> int:
        return self.used - self.spent

    @property
    def remaining(self) -> int:
        """What new requests can still take (open leases are taken)."""
        return max(0, self.effective_limit - self.used - self.leased)

    @property
    def utilization(self) -> float:
        return self.used / self.effective_limit if self.effective_limit else 1.0


@ledger_call
async def read_usage(
    client: Redis,
    snapshot: BudgetSnapshot,
    now: dt.datetime,
    keys: KeySchema | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[BudgetUsage]:
    """The usage of ``budgets`` (default: all of the snapshot) in one round trip."""
    keys = keys or KeySchema()
    chosen = list(snapshot.budgets if budgets is None else budgets)
    windows = [budget.window(now) for budget in chosen]
    async with client.pipeline(transaction=False) as pipeline:
        for budget, window in zip(chosen, windows, strict=True):
            if budget.scope.is_user_template:
                users = keys.users(budget, window)
                pipeline.zcard(users)
                pipeline.zrevrange(users, 0, TOP_USERS - 1, withscores=True)
                pipeline.zcount(users, budget.effective_limit(window), "+inf")
            else:
                pipeline.hmget(keys.counter(budget, window, None), _COUNTER_FIELDS)
            for pool in snapshot.pools_for(budget.id):
                pipeline.hmget(keys.pool(pool, budget), _POOL_FIELDS)
        answers = iter(await pipeline.execute())
    results = []
    for budget, window in zip(chosen, windows, strict=True):
        limit = budget.effective_limit(window)
        if budget.scope.is_user_template:
            tracked, top, exhausted = next(answers), next(answers), next(answers)
            counters: dict[str, Any] = {
                "users_tracked": int(tracked),
                "top_users": tuple((_text(user), int(score)) for user, score in top),
                "users_exhausted": int(exhausted),
            }
        else:
            used, spent, requests, denied, would_deny, hwm, leased = (
                _int(v) for v in next(answers)
            )
            counters = {
                "used": used - leased,
                "leased": leased,
                "spent": spent,
                "requests": requests,
                "denied": denied,
                "would_deny": would_deny,
                "reported_percent": hwm,
            }
        pools = []
        for pool in snapshot.pools_for(budget.id):
            used, spent, requests, activated, exhausted = next(answers)
            pools.append(
                PoolUsage(
                    pool=pool,
                    used=_int(used),
                    spent=_int(spent),
                    requests=_int(requests),
                    activated_at_ms=_int(activated) if activated is not None else None,
                    exhausted_at_ms=_int(exhausted) if exhausted is not None else None,
                )
            )
        results.append(
            BudgetUsage(
                budget=budget, window=window, effective_limit=limit, pools=tuple(pools), **counters
            )
        )
    return results


@ledger_call
async def read_daily_spend(
    client: Redis,
    budget: Budget,
    start: dt.datetime,
    end: dt.datetime,
    keys: KeySchema | None = None,
    max_days: int = 400,
) -> dict[dt.date, int]:
    """Settled spend of ``budget`` per local day from ``start`` to ``end`` (one pipeline)."""
    keys = keys or KeySchema()
    first = start.astimezone(budget.zone).date()
    last = end.astimezone(budget.zone).date()
    days = [first + dt.timedelta(days=n) for n in range(min((last - first).days + 1, max_days))]
    async with client.pipeline(transaction=False) as pipeline:
        for day in days:
            pipeline.hget(keys.history(budget, day), "spent")
        answers = await pipeline.execute()
    return {day: _int(spent) for day, spent in zip(days, answers, strict=True) if spent}
