"""Decisions per second on one primary and on a 3-primary Redis Cluster, same machine.

Each decision reserves on three budgets (its tenant's, a global one and a per-user
template: two slots on Cluster; 8 tenants, so tenant slots spread over the primaries)
and nothing is leased, so every decision is a trip to Redis. ``CALLERS`` asyncio
callers in one process reserve for ``SECONDS``; the same process is the client on both
topologies. Per primary: its calls and its own time per call (``INFO commandstats``).
Run alone: ``python -m bench.topologies`` (prints the section).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import resource
import time
import uuid
from dataclasses import dataclass

import redis

from bench.ledger import monthly_budget
from bench.stats import summarize
from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.localservices import RedisClusterSet, RedisServer
from budget_guard.store.channel import ChannelSettings, LedgerChannel
from budget_guard.store.connect import redis_client
from budget_guard.store.ledger import Ledger
from budget_guard.store.scripts import RESERVE
from budget_guard.store.sharded import ShardedLedger

CALLERS = 64
TENANTS = 8  # their slots spread over the primaries
SECONDS = 4.0


READING = """## Reading the topology numbers

- **On one machine the client limits, not Redis.** A Cluster decision costs the
  deciding process several times the CPU of a pipelined one: two scripts instead of
  one, each through redis-py's `RedisCluster` (slot lookup, a pooled connection per
  call, no pipelining across callers). With 2 cores shared by the client, three
  primaries and their replicas (and, when measured, other work: see the load
  average), the Cluster run is client-bound and slower than one primary. Three
  primaries on one 2-core machine cannot show scale-out; on separate machines the
  client's cost is what to plan for (more webhook replicas: it scales with them).
- **Per-shard cost** is the server time per script on each primary, times the scripts
  per decision it runs. On Cluster a script carries fewer budgets (the tenant's part or
  the global part), so it costs a primary less than a whole request does on one.
- **The `{global}` slot is one shard's work for every decision**: every request has a
  part there (the anchor, and the tenant-less budgets), so its primary runs a script
  for every decision; the tenant slots' parts spread over the others.

**Paper estimate of shards per request rate.** On a quiet machine a reservation with
its settlement costs one primary about 80 µs of server time (reserve 31 µs + settle
48 µs, in "Ledger: reserve and settle" above); keeping a primary below half a core
gives about **6,000 requests/s per primary** when every request goes to Redis. On
Cluster each request costs about that in its tenant's slot and again in `{global}`:
N primaries serve the tenant parts of about 6,000 x (N - 1) requests/s, and the
`{global}` anchor caps the whole at about one primary's rate (~6,000 requests/s that
reach Redis). What moves the cap is leases (`--local-leases`, on by default): most
decisions are then made in process and committed in batches of up to 256 per slot,
so Redis sees a fraction of the requests ("Ledger path under load", above). So:
below ~6,000 decisions/s that reach Redis, one primary (or Sentinel) is enough;
Cluster adds room for the tenant slots' data and work (3 primaries: ~12,000
requests/s of tenant-slot work) while the rate in `{global}` is the number to watch
(`INFO commandstats` on its primary).
"""


def three_budgets() -> BudgetSnapshot:
    return BudgetSnapshot(
        [
            *(monthly_budget(f"tenant-{n}", {"tenant": f"t{n}"}) for n in range(TENANTS)),
            monthly_budget("global", {}),
            monthly_budget("per-user", {"user": "*"}),
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
        identity = RequestIdentity(tenant=f"t{number % TENANTS}", user=f"user-{number}")
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
    settings = ChannelSettings(stall_timeout_seconds=2.0)  # a busy machine is not an outage
    channel = LedgerChannel(client.connection_pool, settings, preload=[RESERVE.load_command])
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
    client = redis_client(nodes.cluster_url, socket_timeout=5, max_connections=4 * CALLERS)
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
    """The section of docs/benchmarks.md (``make bench``), load average included: the
    two topologies share the machine with whatever else runs on it."""
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        "## Ledger: one primary against a 3-primary Redis Cluster",
        "",
        f"`bench/topologies.py`: {CALLERS} asyncio callers in one process reserve for "
        f"{SECONDS:.0f} s, each",
        "decision on three budgets (its tenant's, of 8 tenants; a global one; a per-user",
        "template), no leases, so every decision is a trip to Redis. One primary: the",
        "webhook's pipelined channel. Cluster: `ShardedLedger`, two parts per decision (the",
        "tenant's slot and `{global}`), sent concurrently. Load average during the run",
        f'(1/5/15 min): {load}. See "Reading the topology numbers" below.',
        "",
        "| topology | decisions | decisions/s | p50 (µs) | p99 (µs) | client CPU µs / decision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.topology} | {r.decisions} | {r.per_second:,.0f} | {r.p50_us:,.0f} | "
            f"{r.p99_us:,.0f} | {r.client_cpu_us:,.0f} |"
        )
    lines += [
        "",
        "| topology | primary | scripts | server µs per script | scripts per decision |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        for name, (calls, usec) in zip("ABCD", r.per_primary.values(), strict=False):
            lines.append(
                f"| {r.topology} | {name} | {calls} | {usec:.1f} | {calls / r.decisions:.2f} |"
            )
    return "\n".join(lines) + "\n"


async def run() -> list[Result]:
    results = []
    with RedisServer() as server:
        results.append(await one_primary(server))
    with RedisClusterSet() as nodes:
        results.append(await cluster(nodes))
    return results


def main() -> None:
    print(section(asyncio.run(run())))


if __name__ == "__main__":
    main()
