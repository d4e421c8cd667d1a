"""What each user of a per-user template spent this period, read for the operator's
checkpoint, and put back from it when Redis lost it; the same for a burst pool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.instants import unix_ms
from budget_guard.domain.periods import PeriodWindow
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import KeySchema
from budget_guard.store.plans import POOL_RETENTION
from budget_guard.store.scripts import RESTORE_POOL, RESTORE_USERS

BATCH = 1000  # users per pipeline or script call: no call holds Redis for long


@dataclass(frozen=True)
class UserSpend:
    spent: int  # settled, micro-USD
    reached: int  # the highest threshold percent announced (100: exhausted)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def counter_expiry_ms(window: PeriodWindow) -> int:
    """When a counter of ``window`` may go: one period after it ends (as plans say)."""
    return unix_ms(window.end + (window.end - window.start))


@ledger_call
async def read_user_spend(
    client: Redis, budget: Budget, window: PeriodWindow, keys: KeySchema
) -> dict[str, UserSpend]:
    """Every user of the template ``budget`` in ``window``, with spend and threshold."""
    users = [_text(user) for user in await client.zrange(keys.users(budget, window), 0, -1)]
    spend: dict[str, UserSpend] = {}
    for start in range(0, len(users), BATCH):
        chunk = users[start : start + BATCH]
        async with client.pipeline(transaction=False) as pipeline:
            for user in chunk:
                pipeline.hmget(keys.counter(budget, window, user), ("spent", "hwm"))
            answers = await pipeline.execute()
        for user, (spent, hwm) in zip(chunk, answers, strict=True):
            spend[user] = UserSpend(int(spent or 0), int(hwm or 0))
    return spend


@ledger_call
async def restore_user_spend(
    client: Redis,
    budget: Budget,
    window: PeriodWindow,
    recorded: Mapping[str, UserSpend],
    keys: KeySchema,
) -> tuple[int, int]:
    """Raise each user's counter to ``recorded`` (never lower); (users raised, added)."""
    index = keys.users(budget, window)
    prefix = keys.counter(budget, window, "")
    expiry = counter_expiry_ms(window)
    entries = sorted(recorded.items())
    raised = added = 0
    for start in range(0, len(entries), BATCH):
        args: list[Any] = [prefix, expiry]
        for user, spend in entries[start : start + BATCH]:
            args += [user, spend.spent, spend.reached]
        answer = await RESTORE_USERS.run(client, [index], args)
        raised, added = raised + int(answer[0]), added + int(answer[1])
    return raised, added


@ledger_call
async def restore_pool(
    client: Redis,
    pool: BurstPool,
    budget: Budget,
    used: int,
    requests: int,
    activated_ms: int,
    exhausted_ms: int,
    keys: KeySchema,
) -> int:
    """Raise the pool's counter to what its status recorded; returns what was added."""
    expiry = unix_ms(pool.valid_until + POOL_RETENTION)
    args = [used, requests, activated_ms, exhausted_ms, expiry]
    return int(await RESTORE_POOL.run(client, [keys.pool(pool, budget)], args))
