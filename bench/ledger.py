"""Ledger benchmark: reserve and settle against a real local redis-server, beside PING.

The floor, a bare PING round trip, is measured in the same run, interleaved with the
operations so that machine noise hits all of them alike: once through redis-py's
ordinary ``client.ping()``, once through the same lean path the ledger uses.
The server's own time per script comes from ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from bench.stats import Latency, summarize
from budget_guard.domain.budget import Budget
from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.manifest import parse_budget
from budget_guard.domain.resolution import Attribution, BudgetSnapshot, RequestIdentity
from budget_guard.store.ledger import Ledger
from budget_guard.store.scripts import LuaScript, _roundtrip, bulk

IDENTITY = RequestIdentity(tenant="acme", user="alice", tier="pro", feature="chat", model="gpt-4o")
PING = b"*1\r\n$4\r\nPING\r\n"


def monthly_budget(name: str, scope: dict[str, str]) -> Budget:
    """A monthly LLMBudget over ``scope``, its limit beyond what a benchmark spends."""
    return parse_budget(
        {
            "kind": "LLMBudget",
            "metadata": {"name": name},
            "spec": {"scope": scope, "limit": "100000000", "period": "Monthly"},
        }
    )


def four_budgets() -> BudgetSnapshot:
    return BudgetSnapshot(
        [
            monthly_budget("global", {}),
            monthly_budget("tenant", {"tenant": "acme"}),
            monthly_budget("feature", {"feature": "chat"}),
            monthly_budget("pro-users", {"user": "*", "tier": "pro"}),
        ]
    )


# A script that only burns server time: calibrated to reserve.lua's own time, it shows
# what any script of that cost takes end to end on this machine.
SPIN = LuaScript("spin", "local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return 1")


@dataclass(frozen=True)
class LedgerResults:
    latencies: list[Latency]
    reserve_server_us: float
    settle_server_us: float
    spin_server_us: float


async def _sequential(
    operations: dict[str, Callable[[], Awaitable[object]]], rounds: int
) -> dict[str, list[int]]:
    durations: dict[str, list[int]] = {name: [] for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():
            start = time.perf_counter_ns()
            await operation()
            durations[name].append(time.perf_counter_ns() - start)
    return durations


async def _throughput(
    operation: Callable[[], Awaitable[object]], seconds: float, workers: int
) -> float:
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


async def _server_us(client: Redis) -> float:
    stats = await client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


async def run(redis_url: str, rounds: int = 5000, throughput_seconds: float = 3.0) -> LedgerResults:
    client = Redis.from_url(redis_url, max_connections=64)
    await client.flushdb()
    ledger = Ledger(client)
    planner = ChargePlanner(four_budgets())
    attribution = Attribution("acme", "alice", "chat", "gpt-4o")
    to_settle: list[str] = []

    async def reserve() -> None:
        request_id = uuid.uuid4().hex
        now = dt.datetime.now(dt.UTC)
        await ledger.reserve(request_id, planner.plan(IDENTITY, now), 1234, now, attribution)
        to_settle.append(request_id)

    async def settle() -> None:
        await ledger.settle(to_settle.pop(), 1000, dt.datetime.now(dt.UTC))

    async def ping() -> None:
        await client.ping()

    async def lean_ping() -> None:
        await _roundtrip(client, PING)

    operations = {"ping": ping, "lean_ping": lean_ping, "reserve": reserve, "settle": settle}
    await _sequential(operations, 500)  # warm-up: connections, script cache, plan cache
    durations = await _sequential(operations, rounds)

    await client.config_resetstat()
    for _ in range(2000):
        await reserve()
    reserve_server = await _server_us(client)
    await client.config_resetstat()
    for _ in range(2000):
        await settle()
    settle_server = await _server_us(client)

    spin_server, spin_command = await _calibrated_spin(client, reserve_server)

    async def spin() -> None:
        await SPIN.call(client, spin_command)

    spin_durations = (await _sequential({"spin": spin}, rounds // 2))["spin"]

    ping_ops = await _throughput(ping, throughput_seconds, 16)
    lean_ops = await _throughput(lean_ping, throughput_seconds, 16)
    reserve_ops = await _throughput(reserve, throughput_seconds, 16)
    settle_ops = await _throughput(settle, min(throughput_seconds, 1.0), 16)
    await client.aclose()
    return LedgerResults(
        latencies=[
            summarize("PING, `client.ping()` (floor)", durations["ping"], ping_ops),
            summarize("PING, lean path (floor)", durations["lean_ping"], lean_ops),
            summarize("reserve, 4 budgets", durations["reserve"], reserve_ops),
            summarize("settle, 4 budgets", durations["settle"], settle_ops),
            summarize("a script that only spins as long as reserve", spin_durations, 0.0),
        ],
        reserve_server_us=reserve_server,
        settle_server_us=settle_server,
        spin_server_us=spin_server,
    )


async def _calibrated_spin(client: Redis, target_us: float) -> tuple[float, bytes]:
    iterations = 20_000
    for _ in range(3):
        command = SPIN.command(0, 1, bulk(iterations))
        await client.config_resetstat()
        for _ in range(300):
            await SPIN.call(client, command)
        measured = await _server_us(client)
        iterations = max(1, int(iterations * target_us / measured)) if measured else iterations
    command = SPIN.command(0, 1, bulk(iterations))
    await client.config_resetstat()
    for _ in range(300):
        await SPIN.call(client, command)
    return await _server_us(client), command
