"""Decisions per second on one primary and on a 3-primary Redis Cluster, same machine.

Each decision reserves on three budgets (the tenant's, a global one and a per-user
template: two slots on Cluster) and nothing is leased, so every decision is a trip to
Redis. ``CALLERS`` asyncio callers in one process reserve for ``SECONDS``; the same
process is the client on both topologies. Per primary: its calls and its own time per
call (``INFO commandstats``). Run: ``python -m bench.topologies``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import resource
import time
import uuid
from dataclasses import dataclass

import redis

from bench.stats import summarize
from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.manifest import parse_budget
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.localservices import RedisClusterSet, RedisServer
from budget_guard.store.channel import LedgerChannel
from budget_guard.store.connect import redis_client
from budget_guard.store.ledger import Ledger
from budget_guard.store.scripts import RESERVE
from budget_guard.store.sharded import ShardedLedger

CALLERS = 64
SECONDS = 4.0


def three_budgets() -> BudgetSnapshot:
    def make(name: str, scope: dict[str, str]) -> dict[str, object]:
        return {
            "kind": "LLMBudget",
            "metadata": {"name": name},
            "spec": {"scope": scope, "limit": "100000000", "period": "Monthly"},
        }

    return BudgetSnapshot(
        [
            parse_budget(make("tenant", {"tenant": "acme"})),
            parse_budget(make("global", {})),
            parse_budget(make("per-user", {"user": "*"})),
        ]
    )


@dataclass(frozen=True)
class Result:
    topology: str
    decisions: int
    seconds: float
    p50_us: float
    p99_us: float
    client_cpu_us: float  # this process's CPU per decision
    per_primary: dict[int, tuple[int, float]]  # port -> (script calls, server µs per call)

    @property
    def per_second(self) -> float:
        return self.decisions / self.seconds


def script_stats(ports: list[int]) -> dict[int, tuple[int, float]]:
    found = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            stats = node.info("commandstats")
        calls = usec = 0
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            if name in stats:
                calls += int(stats[name]["calls"])
                usec += int(stats[name]["usec"])
        found[port] = (calls, usec / calls if calls else 0.0)
    return found


async def hammer(ledger: Ledger) -> tuple[int, float, list[int], float]:
    planner = ChargePlanner(three_budgets())
    latencies: list[int] = []
    stop = time.monotonic() + SECONDS

    async def caller(number: int) -> None:
        identity = RequestIdentity(tenant="acme", user=f"user-{number}")
        while time.monotonic() < stop:
            now = dt.datetime.now(dt.UTC)
            charges = planner.plan(identity, now)
            started = time.perf_counter_ns()
            await ledger.reserve(uuid.uuid4().hex, charges, 1_000, now)
            latencies.append(time.perf_counter_ns() - started)

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    return len(latencies), elapsed, latencies, used


async def one_primary(server: RedisServer) -> Result:
    redis.Redis(port=server.port).flushall()
    client = redis_client(server.url, socket_timeout=None)
    assert isinstance(client, redis.asyncio.Redis)
    channel = LedgerChannel(client.connection_pool, preload=[RESERVE.load_command])
    await channel.start()
    ledger = Ledger(client, channel=channel)
    await hammer(ledger)  # warm up
    redis.Redis(port=server.port).config_resetstat()
    count, elapsed, latencies, cpu = await hammer(ledger)
    await channel.aclose()
    await client.aclose()
    return _result("one primary (pipelined channel)", count, elapsed, latencies, cpu, [server.port])


async def cluster(nodes: RedisClusterSet) -> Result:
    ports = nodes.primary_ports()
    for port in ports:
        redis.Redis(port=port).flushall()
    client = redis_client(nodes.cluster_url, socket_timeout=5)
    assert isinstance(client, redis.asyncio.RedisCluster)
    ledger = ShardedLedger(client)
    await hammer(ledger)
    for port in ports:
        redis.Redis(port=port).config_resetstat()
    count, elapsed, latencies, cpu = await hammer(ledger)
    await client.aclose()
    return _result("3-primary cluster (2 parts)", count, elapsed, latencies, cpu, ports)


def _result(
    topology: str,
    count: int,
    elapsed: float,
    latencies: list[int],
    cpu: float,
    ports: list[int],
) -> Result:
    summary = summarize(topology, latencies, count / elapsed)
    return Result(
        topology,
        count,
        elapsed,
        summary.p50_us,
        summary.p99_us,
        cpu / count * 1e6,
        script_stats(ports),
    )


def section(results: list[Result]) -> str:
    lines = [
        "| topology | decisions | decisions/s | p50 (µs) | p99 (µs) | client CPU µs / decision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.topology} | {r.decisions} | {r.per_second:,.0f} | {r.p50_us:,.0f} | "
            f"{r.p99_us:,.0f} | {r.client_cpu_us:,.0f} |"
        )
    lines.append("")
    lines.append("| topology | primary | scripts | server µs per script | scripts per decision |")
    lines.append("|---|---:|---:|---:|---:|")
    for r in results:
        for port, (calls, usec) in r.per_primary.items():
            lines.append(
                f"| {r.topology} | {port} | {calls} | {usec:.1f} | {calls / r.decisions:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    results = []
    with RedisServer() as server:
        results.append(asyncio.run(one_primary(server)))
    with RedisClusterSet() as nodes:
        results.append(asyncio.run(cluster(nodes)))
    print(section(results))


if __name__ == "__main__":
    main()
