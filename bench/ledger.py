"""Ledger benchmark: reserve and settle against a real local redis-server, beside PING.

The floor (a bare PING round trip on the same client) is measured in the same run,
interleaved with the operations, so machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bench.stats import Latency, summarize
from budget_guard.domain.decision import plan_charges
from budget_guard.domain.manifest import parse_budget
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.store.ledger import Attribution, Ledger

IDENTITY = RequestIdentity(tenant="acme", user="alice", tier="pro", feature="chat", model="gpt-4o")


def four_budgets() -> BudgetSnapshot:
    def make(name: str, scope: dict[str, str]) -> dict[str, object]:
        return {"kind": "LLMBudget", "metadata": {"name": name},
                "spec": {"scope": scope, "limit": "100000000", "period": "Monthly"}}  # fmt: skip

    return BudgetSnapshot(
        [
            parse_budget(make("global", {})),
            parse_budget(make("tenant", {"tenant": "acme"})),
            parse_budget(make("feature", {"feature": "chat"})),
            parse_budget(make("pro-users", {"user": "*", "tier": "pro"})),
        ]
    )


async def _sequential(
    operations: dict[str, Callable[[], Awaitable[object]]], rounds: int
) -> dict[str, list[int]]:
    durations: dict[str, list[int]] = {name: [] for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():  # interleaved: same noise for all
            start = time.perf_counter_ns()
            await operation()
            durations[name].append(time.perf_counter_ns() - start)
    return durations


async def _throughput(operation: Callable[[], Awaitable[object]], seconds: float, workers: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await operation()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.perf_counter() - started)


async def run(redis_url: str, rounds: int = 5000, throughput_seconds: float = 3.0) -> list[Latency]:
    client = Redis.from_url(redis_url, max_connections=64)
    await client.flushdb()
    ledger = Ledger(client)
    snapshot = four_budgets()
    now = dt.datetime.now(dt.UTC)
    charges = plan_charges(snapshot, IDENTITY, now)
    attribution = Attribution("acme", "alice", "chat", "gpt-4o")
    settle_queue: list[str] = []

    async def reserve() -> None:
        request_id = uuid.uuid4().hex
        await ledger.reserve(request_id, charges, 1234, now, attribution)
        settle_queue.append(request_id)

    async def settle() -> None:
        await ledger.settle(settle_queue.pop(), 1000, now)

    async def ping() -> None:
        await client.ping()

    await _sequential({"ping": ping, "reserve": reserve, "settle": settle}, 500)  # warm-up
    durations = await _sequential({"ping": ping, "reserve": reserve, "settle": settle}, rounds)
    ping_ops = await _throughput(ping, throughput_seconds, 16)
    reserve_ops = await _throughput(reserve, throughput_seconds, 16)
    settle_ops = await _throughput(settle, min(throughput_seconds, 1.0), 16)
    await client.aclose()
    return [
        summarize("PING (floor)", durations["ping"], ping_ops),
        summarize("reserve, 4 budgets", durations["reserve"], reserve_ops),
        summarize("settle, 4 budgets", durations["settle"], settle_ops),
    ]
