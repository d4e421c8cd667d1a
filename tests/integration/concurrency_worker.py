"""One process of the zero-overspend test: many asyncio tasks reserving at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid

from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.store.connect import redis_client
from budget_guard.store.leases import LocalLeases
from budget_guard.store.sharded import ledger_for
from tests.factories import budget
from tests.waiting import eventually

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
    redis_url: str,
    worker: int,
    tasks: int,
    costs: list[int],
    limits: tuple[str, str, str],
    use_leases: bool,
) -> list[tuple[bool, int, str]]:
    client = redis_client(redis_url, max_connections=tasks * 4)  # redis:// or redis+cluster://
    ledger = ledger_for(client)
    leases = LocalLeases(ledger)
    planner = ChargePlanner(snapshot(*limits))
    rng = random.Random(worker)
    start = asyncio.Event()
    waiting: list[int] = []

    async def one(task: int) -> tuple[bool, int, str]:
        user = f"user-{(worker * tasks + task) % USERS}"
        cost = rng.choice(costs)
        charges = planner.plan(RequestIdentity(tenant="acme", user=user), NOW)
        waiting.append(task)
        await start.wait()
        if use_leases:
            decision = await leases.reserve(str(uuid.uuid4()), charges, cost, NOW, None)
        else:
            decision = await ledger.reserve(str(uuid.uuid4()), charges, cost, NOW)
        return decision.allowed, cost, user

    pending = [asyncio.create_task(one(task)) for task in range(tasks)]
    await eventually(lambda: len(waiting) == tasks, every=0.001, what="every task at the start")
    start.set()
    try:
        return list(await asyncio.gather(*pending))
    finally:
        await leases.close()  # commit every local decision, return every lease
        await client.aclose()


def run(
    redis_url: str,
    worker: int,
    tasks: int,
    costs: list[int],
    limits: tuple[str, str, str],
    use_leases: bool = False,
) -> list[tuple[bool, int, str]]:
    return asyncio.run(_hammer(redis_url, worker, tasks, costs, limits, use_leases))
