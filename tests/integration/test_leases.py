"""Leases: decisions in process from budget taken ahead, with nothing lost or overspent."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
from redis.asyncio import Redis

from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.resolution import Attribution, BudgetSnapshot, RequestIdentity
from budget_guard.localservices import RedisServer
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.leases import LeaseSettings, LocalLeases
from budget_guard.store.ledger import Ledger, SettlementStatus
from budget_guard.store.scripts import RESERVE
from tests.factories import budget
from tests.fixtures.proxy import DelayingProxy
from tests.integration import concurrency_worker

pytestmark = pytest.mark.redis

NOW = dt.datetime(2030, 11, 10, 12, 0, tzinfo=dt.UTC)
WHO = RequestIdentity(tenant="acme", user="alice", feature="chat")
ATTRIBUTION = Attribution("acme", "alice", "chat", "gpt-4o")
COST = 1_000


def planner(*budgets_: object) -> ChargePlanner:
    return ChargePlanner(BudgetSnapshot(budgets_ or [budget("acme", "1", tenant="acme")]))  # type: ignore[arg-type]


async def counter(ledger: Ledger, plan: ChargePlanner, name: str = "acme") -> dict[str, int]:
    charges = [c for c in plan.plan(WHO, NOW) if c.budget.ref.name == name]
    (usage,) = await ledger.usage(charges)
    return {
        "used": usage.used,
        "leased": usage.leased,
        "spent": usage.spent,
        "assigned": usage.assigned,
    }


async def test_after_one_round_trip_decisions_are_local_and_committed_in_batches(
    redis_client: Redis,
) -> None:
    ledger = Ledger(redis_client)
    leases = LocalLeases(ledger)
    plan = planner()
    for index in range(10):
        decision = await leases.reserve(f"r{index}", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
        assert decision.allowed
    assert (leases.ledger_decisions, leases.local_decisions) == (1, 9)
    before_commit = await counter(ledger, plan)
    assert before_commit["assigned"] == COST  # only the round-trip request is assigned yet
    assert before_commit["leased"] > 9 * COST  # the lease covers the local ones
    assert leases.holds("r5")
    assert await leases.flush(NOW) == 9
    assert not leases.holds("r5")
    committed = await counter(ledger, plan)
    assert committed["assigned"] == 10 * COST
    assert committed["used"] == before_commit["used"]  # committing moves, never adds
    settled = await ledger.settle("r5", 400, NOW)  # a local decision settles like any other
    assert (settled.status, settled.charged_micros) == (SettlementStatus.SETTLED, 400)
    await leases.close()
    after = await counter(ledger, plan)
    assert after["leased"] == 0
    assert after["used"] == 9 * COST + 400


async def test_a_lease_never_takes_more_than_an_eighth_of_what_is_left(
    redis_client: Redis,
) -> None:
    ledger = Ledger(redis_client)
    leases = LocalLeases(ledger, LeaseSettings(requests_per_lease=10_000))
    plan = planner(budget("acme", "0.1", tenant="acme"))  # 100,000 micro-USD
    await leases.reserve("first", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
    state = await counter(ledger, plan)
    assert state["leased"] == (100_000 - COST) // 8


async def test_near_the_limit_leases_stop_and_the_limit_holds(redis_client: Redis) -> None:
    ledger = Ledger(redis_client)
    leases = LocalLeases(ledger)
    plan = planner(budget("acme", "0.05", tenant="acme"))  # exactly 50 requests
    allowed = 0
    for index in range(80):
        decision = await leases.reserve(f"r{index}", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
        allowed += decision.allowed
    await leases.close()
    state = await counter(ledger, plan)
    assert allowed == 50  # one process: nothing held elsewhere, so every cent is usable
    assert state == {"used": 50 * COST, "leased": 0, "spent": 0, "assigned": 50 * COST}


async def test_a_retried_commit_applies_once(redis_client: Redis) -> None:
    ledger = Ledger(redis_client)
    leases = LocalLeases(ledger)
    plan = planner()
    for index in range(3):
        await leases.reserve(f"r{index}", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
    batch = list(leases._outbox)
    await ledger.commit("batch-1", batch, NOW)
    await ledger.commit("batch-1", batch, NOW)
    state = await counter(ledger, plan)
    assert state["assigned"] == 3 * COST
    pending = await redis_client.zcard(ledger.keys.pending)
    assert pending == 3  # one reservation each, not two


async def test_idle_leases_go_back(redis_client: Redis) -> None:
    ledger = Ledger(redis_client)
    leases = LocalLeases(ledger, LeaseSettings(idle_seconds=0.0))
    plan = planner()
    await leases.reserve("r1", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
    assert (await counter(ledger, plan))["leased"] > 0
    assert await leases.release_idle() == 1
    assert await counter(ledger, plan) == {"used": COST, "leased": 0, "spent": 0, "assigned": COST}


async def test_while_redis_is_down_leases_keep_deciding_and_nothing_is_lost() -> None:
    with RedisServer() as redis_server:
        client = Redis.from_url(redis_server.url, socket_timeout=1)
        ledger = Ledger(client)
        leases = LocalLeases(ledger)
        plan = planner()
        assert (await leases.reserve("r0", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)).allowed
        redis_server.pause()  # unreachable, but keeps its data
        for index in range(1, 6):
            decision = await leases.reserve(
                f"r{index}", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION
            )
            assert decision.allowed  # within the lease: no Redis needed
        with pytest.raises(LedgerUnavailable):  # the store's one error for an outage
            await leases.flush(NOW)
        assert leases.queued == 5  # kept for later
        redis_server.resume()
        assert await leases.flush(NOW) == 5
        await leases.close()
        state = await counter(ledger, plan)
        assert state == {"used": 6 * COST, "leased": 0, "spent": 0, "assigned": 6 * COST}
        await client.aclose()


def test_many_processes_with_leases_never_overspend(redis_server: RedisServer) -> None:
    limits = ("0.009", "0.050", "0.045")
    context = multiprocessing.get_context("spawn")
    from redis import Redis as SyncRedis

    SyncRedis.from_url(redis_server.url).flushdb()
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        futures = [
            pool.submit(
                concurrency_worker.run,
                redis_server.url,
                worker,
                50,
                [700, 1_000, 2_300],
                limits,
                True,
            )
            for worker in range(4)
        ]
        outcomes = [outcome for future in futures for outcome in future.result()]
    allowed = sum(cost for ok, cost, _ in outcomes if ok)
    assert 0 < allowed <= 45_000
    sync = SyncRedis.from_url(redis_server.url)
    counters = [key for key in sync.keys("bg:*:c:default/global:*") if b":u:" not in key]
    (global_key,) = counters
    used = int(sync.hget(global_key, "used"))
    assert used == allowed  # all leases returned, every allowed request recorded
    assert int(sync.hget(global_key, "leased") or 0) == 0


async def test_a_counter_lost_by_redis_still_gets_the_spend(redis_client: Redis) -> None:
    ledger = Ledger(redis_client)
    leases = LocalLeases(ledger)
    plan = planner()
    await leases.reserve("r0", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
    await leases.reserve("r1", plan.plan(WHO, NOW), COST, NOW, ATTRIBUTION)
    await redis_client.flushdb()  # a failover without persistence
    assert await leases.flush(NOW) == 1
    await leases.close()
    state = await counter(ledger, plan)
    assert state == {"used": COST, "leased": 0, "spent": 0, "assigned": COST}


async def test_leases_granted_in_an_answer_never_read_are_given_back_once(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """A reservation asks for a lease, Redis grants it, and the answer is lost (the
    process gave up on it): no one holds that room. It goes back at the next release
    round, once; the request's own cost stays reserved for its settlement."""
    plan = planner()
    charges = plan.plan(WHO, NOW)
    reader = Ledger(redis_client)
    await redis_client.script_load(RESERVE.source)  # no NOSCRIPT answer to lose first
    with DelayingProxy(redis_server.port) as proxy:
        client = Redis.from_url(proxy.url, socket_timeout=0.3)
        leases = LocalLeases(Ledger(client))
        await client.ping()  # connected: what is lost next is the reservation's answer
        proxy.drop_replies = True
        with pytest.raises(LedgerUnavailable) as lost:
            await leases.reserve("lost-answer", charges, COST, NOW, ATTRIBUTION)
        assert lost.value.sent
        proxy.drop_replies = False
        granted = await counter(reader, plan)
        assert granted["assigned"] == COST  # the reservation ran in Redis...
        assert granted["leased"] > 0  # ...and granted a lease this process never saw
        assert leases.open_leases == 0

        await leases.release_idle()
        returned = await counter(reader, plan)
        assert returned == {**granted, "used": COST, "leased": 0}
        await client.aclose()
    counters = leases.counters_of(charges)
    assert await reader.forget_grants("lost-answer", counters)  # found, nothing left
    assert await counter(reader, plan) == returned
    settled = await reader.settle("lost-answer", COST // 2, NOW)
    assert settled.status is SettlementStatus.SETTLED
    assert (await counter(reader, plan))["spent"] == COST // 2
    assert not await reader.forget_grants("never-reserved", counters)
