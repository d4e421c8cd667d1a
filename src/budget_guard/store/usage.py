"""Where every budget stands now: one write of ``read_usage.lua`` calls for a whole
snapshot.

Used by the webhook's ``GET /v1/budgets`` and by the operator's status sync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.periods import PeriodWindow
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import KeySchema
from budget_guard.store.scripts import READ_USAGE, bulk

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


USAGE_CHUNK = 500  # budgets per script call: between calls Redis serves the webhooks
CLUSTER_CALLS_AT_ONCE = 100  # Redis Cluster: one call per budget, this many in flight


@dataclass(frozen=True)
class UsageQuery:
    """The read of some budgets' usage, encoded once: the status sync asks the same
    question every interval, so it keeps the query while the budgets and their periods
    hold (see ``holds``)."""

    snapshot: BudgetSnapshot
    budgets: tuple[Budget, ...]
    windows: tuple[PeriodWindow, ...]
    commands: tuple[bytes, ...]  # read_usage.lua calls, USAGE_CHUNK budgets each
    since: dt.datetime  # the latest start of a window
    until: dt.datetime  # the earliest end of a window
    keys: KeySchema

    @classmethod
    def of(
        cls,
        snapshot: BudgetSnapshot,
        now: dt.datetime,
        keys: KeySchema,
        budgets: Sequence[Budget] | None = None,
    ) -> UsageQuery:
        chosen = tuple(snapshot.budgets if budgets is None else budgets)
        windows = tuple(budget.window(now) for budget in chosen)
        commands = tuple(
            _usage_command(
                snapshot, chosen[n : n + USAGE_CHUNK], windows[n : n + USAGE_CHUNK], keys
            )
            for n in range(0, len(chosen), USAGE_CHUNK)
        )
        return cls(
            snapshot,
            chosen,
            windows,
            commands,
            since=max((w.start for w in windows), default=now),
            until=min((w.end for w in windows), default=now + dt.timedelta(days=1)),
            keys=keys,
        )

    def holds(self, snapshot: BudgetSnapshot, now: dt.datetime) -> bool:
        """Does it still ask the right question (the same budgets, no period ended)?"""
        return snapshot is self.snapshot and self.since <= now < self.until

    @ledger_call
    async def read(self, client: Redis | RedisCluster) -> list[Any]:
        """Each budget's raw answer, in order: equal answers mean equal usage."""
        if isinstance(client, RedisCluster):
            return await self._read_per_budget(client)
        replies = await READ_USAGE.call_all(client, self.commands)
        return [answer for reply in replies for answer in reply]

    async def _read_per_budget(self, client: RedisCluster) -> list[Any]:
        """Redis Cluster: a script's keys must share a slot, and one budget's do (its
        counter and pools carry its tenant's hash tag), so one call per budget, routed
        by redis-py to that slot's node."""
        answers: list[Any] = []
        pairs = list(zip(self.budgets, self.windows, strict=True))
        for start in range(0, len(pairs), CLUSTER_CALLS_AT_ONCE):
            calls = [
                READ_USAGE.run(client, *_usage_call(self.snapshot, budget, window, self.keys))
                for budget, window in pairs[start : start + CLUSTER_CALLS_AT_ONCE]
            ]
            for reply in await asyncio.gather(*calls):
                answers.extend(reply)
        return answers

    def usage(self, index: int, answer: Any) -> BudgetUsage:
        """Budget ``index``'s usage from its raw answer."""
        budget, window = self.budgets[index], self.windows[index]
        main, *pool_answers = answer
        if budget.scope.is_user_template:
            tracked, exhausted, top = main
            counters: dict[str, Any] = {
                "users_tracked": int(tracked),
                "users_exhausted": int(exhausted),
                "top_users": tuple(
                    (_text(top[n]), int(float(top[n + 1]))) for n in range(0, len(top), 2)
                ),
            }
        else:
            used, spent, requests, denied, would_deny, hwm, leased = (_int(v) for v in main)
            counters = {
                "used": used - leased,
                "leased": leased,
                "spent": spent,
                "requests": requests,
                "denied": denied,
                "would_deny": would_deny,
                "reported_percent": hwm,
            }
        pools = tuple(
            _pool_usage(pool, pool_answer)
            for pool, pool_answer in zip(
                self.snapshot.pools_for(budget.id), pool_answers, strict=True
            )
        )
        return BudgetUsage(
            budget=budget,
            window=window,
            effective_limit=budget.effective_limit(window),
            pools=pools,
            **counters,
        )


def _usage_command(
    snapshot: BudgetSnapshot,
    budgets: Sequence[Budget],
    windows: Sequence[PeriodWindow],
    keys: KeySchema,
) -> bytes:
    """One read_usage.lua call for ``budgets``, RESP-encoded."""
    encoded_keys: list[bytes] = []
    specs: list[bytes] = []
    for budget, window in zip(budgets, windows, strict=True):
        pools = snapshot.pools_for(budget.id)
        if budget.scope.is_user_template:
            encoded_keys.append(bulk(keys.users(budget, window)))
            specs.append(bulk(f"u {len(pools)} {budget.effective_limit(window)}"))
        else:
            encoded_keys.append(bulk(keys.counter(budget, window, None)))
            specs.append(bulk(f"c {len(pools)}"))
        encoded_keys.extend(bulk(keys.pool(pool, budget)) for pool in pools)
    fields = (bulk(" ".join(_COUNTER_FIELDS)), bulk(" ".join(_POOL_FIELDS)), bulk(TOP_USERS))
    return READ_USAGE.command(
        len(encoded_keys), len(fields) + len(specs), *encoded_keys, *fields, *specs
    )


def _usage_call(
    snapshot: BudgetSnapshot, budget: Budget, window: PeriodWindow, keys: KeySchema
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of a read_usage.lua call for one budget."""
    pools = snapshot.pools_for(budget.id)
    if budget.scope.is_user_template:
        main = keys.users(budget, window)
        spec = f"u {len(pools)} {budget.effective_limit(window)}"
    else:
        main, spec = keys.counter(budget, window, None), f"c {len(pools)}"
    fields = [" ".join(_COUNTER_FIELDS), " ".join(_POOL_FIELDS), TOP_USERS]
    return [main, *(keys.pool(pool, budget) for pool in pools)], [*fields, spec]


def _pool_usage(pool: BurstPool, answer: Any) -> PoolUsage:
    used, spent, requests, activated, exhausted = answer
    return PoolUsage(
        pool=pool,
        used=_int(used),
        spent=_int(spent),
        requests=_int(requests),
        activated_at_ms=_int(activated) if activated is not None else None,
        exhausted_at_ms=_int(exhausted) if exhausted is not None else None,
    )


async def read_usage(
    client: Redis,
    snapshot: BudgetSnapshot,
    now: dt.datetime,
    keys: KeySchema | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[BudgetUsage]:
    """The usage of ``budgets`` (default: all of the snapshot), in one write to Redis."""
    query = UsageQuery.of(snapshot, now, keys or KeySchema(), budgets)
    answers = await query.read(client)
    return [query.usage(n, answer) for n, answer in enumerate(answers)]


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
