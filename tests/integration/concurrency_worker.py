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


def assert_varied_costs_fit(outcomes: list[tuple[bool, int, str]], used: dict[str, int]) -> None:
    """The varied-costs run's books (limits 0.009 per user, 0.050 tenant, 0.045 global):
    every counter holds exactly what was allowed on it, none past its limit, and the
    limits were reached (there was contention)."""
    allowed = [o for o in outcomes if o[0]]
    assert used["global"] == used["tenant"] == sum(cost for _, cost, _ in allowed)
    assert used["global"] <= 45_000
    assert len(allowed) < len(outcomes)
    for index in range(USERS):
        user = f"user-{index}"
        spent = sum(cost for ok, cost, who in allowed if who == user)
        assert used[user] == spent <= 9_000
