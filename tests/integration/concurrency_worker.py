"""One process of the zero-overspend test: many asyncio tasks reserving at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid

from redis.asyncio import Redis

from budget_guard.domain.decision import plan_charges
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.store.ledger import Ledger
from tests.factories import budget

NOW = dt.datetime(2030, 11, 10, 12, 0, tzinfo=dt.UTC)
USERS = 10


def snapshot(per_user: str, tenant: str, global_cap: str) -> BudgetSnapshot:
    return BudgetSnapshot(
        [
            budget("per-user", per_user, user="*"),
            budget("tenant", tenant, tenant="acme"),
            budget("global", global_cap),
        ]
    )


async def _hammer(
    redis_url: str, worker: int, tasks: int, costs: list[int], limits: tuple[str, str, str]
) -> list[tuple[bool, int, str]]:
    client = Redis.from_url(redis_url, max_connections=tasks)
    ledger = Ledger(client)
    compiled = snapshot(*limits)
    rng = random.Random(worker)
    start = asyncio.Event()

    async def one(task: int) -> tuple[bool, int, str]:
        user = f"user-{(worker * tasks + task) % USERS}"
        cost = rng.choice(costs)
        charges = plan_charges(compiled, RequestIdentity(tenant="acme", user=user), NOW)
        await start.wait()
        decision = await ledger.reserve(str(uuid.uuid4()), charges, cost, NOW)
        return decision.allowed, cost, user

    pending = [asyncio.create_task(one(task)) for task in range(tasks)]
    await asyncio.sleep(0.05)
    start.set()
    try:
        return list(await asyncio.gather(*pending))
    finally:
        await client.aclose()


def run(
    redis_url: str, worker: int, tasks: int, costs: list[int], limits: tuple[str, str, str]
) -> list[tuple[bool, int, str]]:
    return asyncio.run(_hammer(redis_url, worker, tasks, costs, limits))
