"""One stored plan for every user of the same budgets: each request still reserves,
commits and settles on its own user's counter and detail."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from redis.asyncio import Redis, RedisCluster

from budget_guard.domain.decision import plan_charges
from budget_guard.domain.resolution import Attribution, BudgetSnapshot, RequestIdentity
from budget_guard.localservices import RedisClusterSet
from budget_guard.store.connect import redis_client
from budget_guard.store.ledger import (
    ExpiredReservations,
    Ledger,
    LedgerSettings,
    LocalReservation,
    Settlement,
)
from budget_guard.store.sharded import ShardedLedger
from tests.factories import budget

pytestmark = pytest.mark.redis

NOW = dt.datetime(2030, 11, 10, 12, 0, tzinfo=dt.UTC)
USD = 1_000_000
# "%1" would be a capture reference in a Lua replacement string: filled in literally.
USERS = ("alice", "b%1ob")
SNAPSHOT = BudgetSnapshot(
    [budget("per-user", "10", user="*", tenant="acme"), budget("acme", "100", tenant="acme")]
)


def who(user: str) -> RequestIdentity:
    return RequestIdentity(tenant="acme", user=user, feature="chat", model="gpt-4o")


def attribution(user: str) -> Attribution:
    return Attribution("acme", user, "chat", "gpt-4o")


async def per_user_usage(ledger: Ledger, user: str) -> int:
    charges = [c for c in plan_charges(SNAPSHOT, who(user), NOW) if c.subject is not None]
    (usage,) = await ledger.usage(charges)
    return usage.used


async def assert_settled_as_their_own(
    client: Redis | RedisCluster, ledger: Ledger, spent: list[int]
) -> None:
    (template,) = (b for b in SNAPSHOT.budgets if b.ref.name == "per-user")
    day = NOW.date()
    history = await client.hgetall(ledger.keys.user_history(template, day))
    attributed = await client.hgetall(ledger.keys.user_attribution("acme", day))
    users_index = ledger.keys.users(template, template.window(NOW))
    for user, amount in zip(USERS, spent, strict=True):
        assert await per_user_usage(ledger, user) == amount
        assert history[f"u:{user}".encode()] == str(amount).encode()
        assert attributed[f"s\x1facme\x1fchat\x1fgpt-4o\x1f{user}".encode()] == str(amount).encode()
        assert await client.zscore(users_index, user) == amount


async def reserve_both(ledger: Ledger) -> None:
    for index, user in enumerate(USERS):
        charges = plan_charges(SNAPSHOT, who(user), NOW)
        decision = await ledger.reserve(f"r{index}", charges, 2 * USD, NOW, attribution(user))
        assert decision.allowed


async def settle_one_sweep_the_other(
    client: Redis | RedisCluster, ledger: Ledger
) -> list[Settlement]:
    settled = await ledger.settle("r0", 1_500_000, NOW)
    assert settled.attribution == attribution(USERS[0])
    # The other one by the sweeper, at its estimate: its record names its user too.
    swept = await ledger.sweep_expired(NOW + dt.timedelta(hours=1))
    assert [s.request_id for s in swept] == ["r1"]
    await assert_settled_as_their_own(client, ledger, [1_500_000, 2 * USD])
    return swept


async def test_users_of_the_same_budgets_share_one_plan_and_settle_apart(
    redis_client: Redis,
) -> None:
    ledger = Ledger(redis_client, LedgerSettings(expired_reservations=ExpiredReservations.KEEP))
    await reserve_both(ledger)
    assert len(await redis_client.keys(ledger.keys.plan("*"))) == 1
    swept = await settle_one_sweep_the_other(redis_client, ledger)
    assert swept[0].attribution == attribution(USERS[1])
    settled_stream = await redis_client.xrange(ledger.keys.settled)
    assert [fields[b"user"].decode() for _, fields in settled_stream] == list(USERS)
    assert not [key async for key in redis_client.scan_iter(match="*\x1a*")]


async def test_on_a_cluster_each_slot_holds_one_plan_for_every_user(
    redis_cluster: RedisClusterSet,
) -> None:
    nodes = [redis.Redis(port=port) for port in redis_cluster.primary_ports()]
    for node in nodes:
        node.flushall()
    client = redis_client(redis_cluster.cluster_url, socket_timeout=2)
    assert isinstance(client, RedisCluster)
    ledger = ShardedLedger(client)
    try:
        await reserve_both(ledger)
        plans = [key.decode() for node in nodes for key in node.keys("*:plan:*")]
        assert sorted(plan.split(":plan:")[0] for plan in plans) == ["bg:{global}", "bg:{t:acme}"]
        await settle_one_sweep_the_other(client, ledger)
        assert not [key for node in nodes for key in node.keys("*\x1a*")]
    finally:
        await client.aclose()
        for node in nodes:
            node.close()


async def test_a_batch_of_two_users_on_one_plan_commits_each_on_their_own_counter(
    redis_client: Redis,
) -> None:
    ledger = Ledger(redis_client)
    batch = []
    for index, user in enumerate(USERS):
        plan = ledger.plan_for(plan_charges(SNAPSHOT, who(user), NOW), NOW, attribution(user))
        batch.append(LocalReservation(f"r{index}", plan, (index + 1) * USD))
    assert batch[0].plan.key == batch[1].plan.key
    assert batch[0].plan.counter_keys != batch[1].plan.counter_keys
    assert await ledger.commit("batch", batch, NOW) == []
    assert [await per_user_usage(ledger, user) for user in USERS] == [1 * USD, 2 * USD]
    for index in range(len(USERS)):
        assert (await ledger.settle(f"r{index}", (index + 1) * USD, NOW)).attribution == (
            attribution(USERS[index])
        )
    await assert_settled_as_their_own(redis_client, ledger, [1 * USD, 2 * USD])
