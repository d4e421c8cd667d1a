"""The atomic ledger against a real redis-server."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.decision import BudgetVerdict, Decision, plan_charges
from budget_guard.domain.resolution import Attribution, BudgetSnapshot, RequestIdentity
from budget_guard.store.ledger import (
    ExpiredReservations,
    Ledger,
    LedgerDataLost,
    LedgerSettings,
    RequestIdTaken,
    SettlementStatus,
)
from tests.factories import budget, burst

pytestmark = pytest.mark.redis

# In the future: Redis expires keys by its own clock, so test periods must not have ended.
NOW = dt.datetime(2030, 11, 10, 12, 0, tzinfo=dt.UTC)
USD = 1_000_000
ACME = RequestIdentity(tenant="acme", user="alice", tier="pro", feature="chat", model="gpt-4o")


class Harness:
    def __init__(
        self,
        client: Redis,
        budgets: Sequence[Budget],
        pools: Sequence[BurstPool] = (),
        settings: LedgerSettings | None = None,
    ) -> None:
        self.client = client
        self.snapshot = BudgetSnapshot(budgets, pools)
        self.ledger = Ledger(client, settings)

    async def reserve(
        self,
        cost: int,
        identity: RequestIdentity = ACME,
        now: dt.datetime = NOW,
        request_id: str | None = None,
    ) -> Decision:
        charges = plan_charges(self.snapshot, identity, now)
        return await self.ledger.reserve(
            request_id or str(uuid.uuid4()),
            charges,
            cost,
            now,
            Attribution(identity.tenant, identity.user, identity.feature, identity.model),
        )

    async def used(
        self, name: str, identity: RequestIdentity = ACME, now: dt.datetime = NOW
    ) -> int:
        charges = [
            c for c in plan_charges(self.snapshot, identity, now) if c.budget.ref.name == name
        ]
        (usage,) = await self.ledger.usage(charges)
        return usage.used

    async def events(self) -> list[dict[str, str]]:
        entries = await self.client.xrange(self.ledger.keys.events)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_reserves_on_all_budgets_or_on_none(redis_client: Redis) -> None:
    h = Harness(
        redis_client, [budget("tenant", "10", tenant="acme"), budget("chat", "3", feature="chat")]
    )
    assert (await h.reserve(2 * USD)).allowed
    denied = await h.reserve(2 * USD)
    assert not denied.allowed
    assert denied.blocking is not None and denied.blocking.charge.budget.ref.name == "chat"
    assert denied.blocking.used == 2 * USD
    assert await h.used("tenant") == 2 * USD  # nothing reserved on the budget that had room
    assert await h.used("chat") == 2 * USD
    assert (await h.reserve(1 * USD)).allowed  # exactly fills "chat"
    assert await h.used("chat") == 3 * USD


async def test_each_threshold_is_reported_once(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme")])
    first = await h.reserve(7_500_000)
    assert first.states[0].crossed == (70,)
    assert first.summary(None).soft_limit == 70
    assert (await h.reserve(1 * USD)).states[0].crossed == (80,)
    assert (await h.reserve(100_000)).states[0].crossed == ()
    assert (await h.reserve(400_000)).states[0].crossed == (90,)
    assert (await h.reserve(1 * USD)).states[0].crossed == (100,)
    denied = await h.reserve(1)
    assert not denied.allowed and denied.states[0].crossed == ()
    kinds = [(e["kind"], e["threshold"]) for e in await h.events()]
    assert kinds == [
        ("soft_limit", "70"),
        ("soft_limit", "80"),
        ("soft_limit", "90"),
        ("exhausted", "100"),
    ]
    event = (await h.events())[0]
    assert (event["budget"], event["used"], event["limit"]) == (
        "default/tenant",
        "7500000",
        "10000000",
    )


async def test_a_denial_reports_exhaustion_once(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme", thresholds=[])])
    assert (await h.reserve(9 * USD, request_id="big")).allowed
    for _ in range(3):
        assert not (await h.reserve(2 * USD)).allowed
    assert [e["kind"] for e in await h.events()] == ["exhausted"]
    (usage,) = await h.ledger.usage(plan_charges(h.snapshot, ACME, NOW))
    assert (usage.used, usage.reserved, usage.requests, usage.denied) == (9 * USD, 9 * USD, 0, 3)
    await h.ledger.settle("big", 9 * USD, NOW)
    (usage,) = await h.ledger.usage(plan_charges(h.snapshot, ACME, NOW))
    assert (usage.spent, usage.reserved, usage.requests) == (9 * USD, 0, 1)  # counted when settled


async def test_observe_mode_counts_and_reports_but_never_blocks(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("shadow", "1", tenant="acme", enforcement="Observe")])
    decision = await h.reserve(3 * USD)
    assert decision.allowed
    assert decision.states[0].verdict is BudgetVerdict.WOULD_DENY
    assert decision.summary(None).would_deny == ("default/shadow",)
    assert await h.used("shadow") == 3 * USD
    (usage,) = await h.ledger.usage(plan_charges(h.snapshot, ACME, NOW))
    assert usage.would_deny == 1


async def test_burst_pool_only_after_exhaustion_inside_its_window_and_cap(
    redis_client: Redis,
) -> None:
    start, end = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1)
    h = Harness(
        redis_client,
        [budget("tenant", "5", tenant="acme")],
        [burst("extra", "tenant", "10", start, end, max_request_cost="3")],
    )
    primary = await h.reserve(4 * USD)
    assert primary.allowed and primary.summary(None).burst_pools == ()
    from_pool = await h.reserve(2 * USD)
    assert from_pool.allowed and from_pool.summary(None).burst_pools == ("default/extra",)
    assert from_pool.states[0].pool_used == 2 * USD
    assert await h.used("tenant") == 4 * USD  # the primary keeps its own count
    over_cap = await h.reserve(4 * USD)
    assert not over_cap.allowed  # 4 > maxRequestCost 3: the guard rail holds
    after_window = await h.reserve(1 * USD, now=end + dt.timedelta(seconds=1))
    assert after_window.allowed  # a small request still fits the primary...
    outside = await h.reserve(2 * USD, now=end + dt.timedelta(seconds=1))
    assert not outside.allowed  # ...but the pool is closed outside its window
    for _ in range(4):
        assert (await h.reserve(2 * USD)).allowed
    assert not (await h.reserve(2 * USD)).allowed  # pool holds 10: 5 draws of 2
    kinds = [e["kind"] for e in await h.events()]
    assert kinds.count("burst_activated") == 1
    assert kinds.count("burst_exhausted") == 1


async def test_settlement_below_and_above_the_estimate(redis_client: Redis) -> None:
    h = Harness(
        redis_client, [budget("tenant", "10", tenant="acme"), budget("every", "4", user="*")]
    )
    low = await h.reserve(2 * USD, request_id="low")
    high = await h.reserve(1 * USD, request_id="high")
    assert low.allowed and high.allowed
    assert (await h.ledger.settle("low", 500_000, NOW)).status is SettlementStatus.SETTLED
    assert await h.used("tenant") == 1_500_000
    settled = await h.ledger.settle("high", 3_600_000, NOW)
    assert (settled.reserved_micros, settled.charged_micros) == (1 * USD, 3_600_000)
    assert await h.used("tenant") == 4_100_000
    assert await h.used("every") == 4_100_000  # the user's template counter
    assert [e["threshold"] for e in await h.events()] == ["70", "80", "90", "100"]
    (usage,) = await h.ledger.usage(
        [c for c in plan_charges(h.snapshot, ACME, NOW) if c.budget.ref.name == "tenant"]
    )
    assert (usage.spent, usage.reserved) == (4_100_000, 0)


async def test_double_settlement_charges_once(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme")])
    await h.reserve(2 * USD, request_id="r1")
    first = await h.ledger.settle("r1", 1 * USD, NOW)
    second = await h.ledger.settle("r1", 5 * USD, NOW)
    assert first.status is SettlementStatus.SETTLED
    assert (second.status, second.charged_micros) == (SettlementStatus.ALREADY, 1 * USD)
    assert await h.used("tenant") == 1 * USD


async def test_unknown_request_id_changes_nothing(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme")])
    await h.reserve(2 * USD, request_id="known")
    before = await redis_client.dbsize()
    settlement = await h.ledger.settle("never-reserved", 1 * USD, NOW)
    assert settlement.status is SettlementStatus.UNKNOWN
    assert await redis_client.dbsize() == before
    assert await h.used("tenant") == 2 * USD
    with pytest.raises(ValueError, match="must not be negative"):
        await h.ledger.settle("known", -1, NOW)


async def test_a_taken_request_id_is_refused(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme")])
    await h.reserve(1 * USD, request_id="same")
    with pytest.raises(RequestIdTaken):
        await h.reserve(1 * USD, request_id="same")
    assert await h.used("tenant") == 1 * USD


@pytest.mark.parametrize(
    ("policy", "kept"), [(ExpiredReservations.KEEP, 2 * USD), (ExpiredReservations.RELEASE, 0)]
)
async def test_sweeper_settles_overdue_reservations(
    redis_client: Redis, policy: ExpiredReservations, kept: int
) -> None:
    settings = LedgerSettings(reservation_ttl=dt.timedelta(minutes=15), expired_reservations=policy)
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme")], settings=settings)
    await h.reserve(2 * USD, request_id="late")
    await h.reserve(1 * USD, request_id="on-time", now=NOW + dt.timedelta(minutes=10))
    assert await h.ledger.sweep_expired(NOW + dt.timedelta(minutes=14)) == []
    (swept,) = await h.ledger.sweep_expired(NOW + dt.timedelta(minutes=15))
    assert (swept.request_id, swept.charged_micros) == ("late", kept)
    assert swept.attribution == Attribution("acme", "alice", "chat", "gpt-4o")
    assert await h.ledger.sweep_expired(NOW + dt.timedelta(minutes=16)) == []
    assert await h.used("tenant") == kept + 1 * USD
    # A fresh ledger (a restarted process) finds the rest in Redis.
    restarted = Ledger(redis_client, settings)
    assert len(await restarted.sweep_expired(NOW + dt.timedelta(minutes=30))) == 1
    assert await h.used("tenant") == kept + (1 * USD if policy is ExpiredReservations.KEEP else 0)
    # The real usage arriving late still settles exactly once: only the difference.
    late = await h.ledger.settle("late", 3 * USD, NOW + dt.timedelta(hours=1))
    assert late.status is SettlementStatus.SETTLED
    assert late.previously_charged_micros == kept
    assert late.newly_charged_micros == 3 * USD - kept
    again = await h.ledger.settle("late", 3 * USD, NOW + dt.timedelta(hours=1))
    assert again.status is SettlementStatus.ALREADY
    on_time_kept = 1 * USD if policy is ExpiredReservations.KEEP else 0
    assert await h.used("tenant") == 3 * USD + on_time_kept


async def test_seasonal_multiplier_raises_the_effective_limit(redis_client: Redis) -> None:
    seasonal = budget(
        "tenant", "10", tenant="acme", schedule=[{"months": [10, 11, 12], "multiplier": "2.0"}]
    )
    h = Harness(redis_client, [seasonal])
    november = await h.reserve(15 * USD)
    assert november.allowed and november.states[0].charge.effective_limit == 20 * USD
    march = dt.datetime(2031, 3, 3, tzinfo=dt.UTC)
    assert not (await h.reserve(15 * USD, now=march)).allowed


async def test_rollover_exactly_at_a_period_boundary_in_a_non_utc_zone(redis_client: Redis) -> None:
    h = Harness(
        redis_client, [budget("daily", "1", tenant="acme", period="Daily", timeZone="Asia/Kolkata")]
    )
    midnight = dt.datetime(2030, 11, 10, 18, 30, tzinfo=dt.UTC)  # 00:00 on Nov 11 in Kolkata
    last_moment = midnight - dt.timedelta(milliseconds=1)
    assert (await h.reserve(1 * USD, now=last_moment, request_id="before")).allowed
    denied = await h.reserve(1, now=last_moment)
    assert not denied.allowed
    assert denied.blocking is not None and denied.blocking.charge.window.end == midnight
    after = await h.reserve(1 * USD, now=midnight, request_id="after")
    assert after.allowed and after.states[0].charge.window.key == "2030-11-11"
    # Settling after the boundary charges the period the request was reserved in.
    await h.ledger.settle("before", 400_000, midnight + dt.timedelta(minutes=5))
    assert await h.used("daily", now=last_moment) == 400_000
    assert await h.used("daily", now=midnight) == 1 * USD


async def test_history_and_attribution_are_kept_apart_for_reports(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("every", "10", user="*", timeZone="Europe/Berlin")])
    await h.reserve(2 * USD, request_id="a")
    await h.ledger.settle("a", 1_250_000, NOW)
    keys, every = h.ledger.keys, h.snapshot.budgets[0]
    day = NOW.date()

    async def kept_for(key: str) -> int:
        return int(await redis_client.ttl(key))

    # Kept 13 months, whatever the number of users: the budget's day, the tenant's day
    # by feature and model, and which tenants spent that day.
    assert await redis_client.hgetall(keys.history(every, day)) == {
        b"spent": b"1250000",
        b"requests": b"1",
    }
    assert await redis_client.hgetall(keys.attribution("acme", day)) == {
        b"s\x1facme\x1fchat\x1fgpt-4o\x1f": b"1250000",
        b"n\x1facme\x1fchat\x1fgpt-4o\x1f": b"1",
    }
    assert await redis_client.hgetall(keys.attribution_index(day)) == {
        b"s:acme": b"1250000",
        b"n:acme": b"1",
    }
    for key in (keys.history(every, day), keys.attribution("acme", day)):
        assert 399 * 86400 < await kept_for(key) <= 400 * 86400
    # Kept for the per-user window: per user.
    assert await redis_client.hgetall(keys.user_history(every, day)) == {
        b"u:alice": b"1250000",
        b"n:alice": b"1",
    }
    assert await redis_client.hgetall(keys.user_attribution("acme", day)) == {
        b"s\x1facme\x1fchat\x1fgpt-4o\x1falice": b"1250000",
        b"n\x1facme\x1fchat\x1fgpt-4o\x1falice": b"1",
    }
    for key in (keys.user_history(every, day), keys.user_attribution("acme", day)):
        assert 34 * 86400 < await kept_for(key) <= 35 * 86400
    # Kept a little over a week: per UTC hour, the anomaly baseline.
    assert await redis_client.hgetall(keys.hourly(every, day)) == {
        b"s:12": b"1250000",
        b"n:12": b"1",
    }
    assert 8 * 86400 < await kept_for(keys.hourly(every, day)) <= 9 * 86400
    users = h.ledger.keys.users(h.snapshot.budgets[0], h.snapshot.budgets[0].window(NOW))
    assert await redis_client.zscore(users, "alice") == 1_250_000


async def test_counters_expire_after_two_periods(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("daily", "10", tenant="acme", period="Daily")])
    decision = await h.reserve(1 * USD)
    charge = decision.states[0].charge
    key = h.ledger.keys.counter(charge.budget, charge.window, None)
    expires_at_ms = await redis_client.pexpiretime(key)
    assert expires_at_ms == int((charge.window.end + dt.timedelta(days=1)).timestamp() * 1000)


async def test_requests_no_budget_applies_to_are_still_attributed(redis_client: Redis) -> None:
    h = Harness(redis_client, [budget("other", "1", tenant="globex")])
    decision = await h.reserve(2 * USD, request_id="free-range")
    assert decision.allowed and decision.states == ()
    assert (await h.ledger.settle("free-range", 2 * USD, NOW)).status is SettlementStatus.SETTLED
    attribution = await redis_client.hgetall(h.ledger.keys.attribution("acme", NOW.date()))
    assert attribution[b"s\x1facme\x1fchat\x1fgpt-4o\x1f"] == b"2000000"


async def test_amounts_near_the_ceiling_stay_exact(redis_client: Redis) -> None:
    # 100M USD x 10 = 10^15 micro-USD: beyond Lua's 14-digit number format, below 2^53.
    huge = budget(
        "huge", "100000000", tenant="acme", schedule=[{"months": [11], "multiplier": "10"}]
    )
    h = Harness(redis_client, [huge, budget("every", "100000000", user="*")])
    cost = 99_999_999_999_999
    reserved = await h.reserve(cost, request_id="big")
    assert reserved.allowed
    assert reserved.states[1].charge.effective_limit == 10**15
    settled = await h.ledger.settle("big", cost + 123_456_789, NOW)
    assert settled.charged_micros == cost + 123_456_789
    assert await h.used("huge") == cost + 123_456_789
    again = await h.ledger.settle("big", 1, NOW)
    assert (again.status, again.charged_micros) == (SettlementStatus.ALREADY, cost + 123_456_789)


async def test_a_lost_plan_is_sent_again_and_a_lost_reservation_is_reported(
    redis_client: Redis,
) -> None:
    h = Harness(redis_client, [budget("tenant", "10", tenant="acme")])
    charges = plan_charges(h.snapshot, ACME, NOW)
    await h.ledger.reserve("first", charges, 1 * USD, NOW)
    plans = await redis_client.keys(h.ledger.keys.plan("*"))
    assert len(plans) == 1
    await redis_client.delete(*plans)  # Redis lost data the process believes is stored
    with pytest.raises(LedgerDataLost):
        await h.ledger.settle("first", 1 * USD, NOW)
    second = await h.ledger.reserve("second", charges, 1 * USD, NOW)  # the plan is resent
    assert second.allowed
    assert (await h.ledger.settle("second", 500_000, NOW)).status is SettlementStatus.SETTLED
    assert await h.used("tenant") == 1_500_000  # "first" stays reserved at its estimate


async def test_a_forced_reservation_records_a_request_already_let_through(
    redis_client: Redis,
) -> None:
    h = Harness(redis_client, [budget("tenant", "1", tenant="acme")])
    charges = plan_charges(h.snapshot, ACME, NOW)
    assert (await h.ledger.reserve("normal", charges, 1 * USD, NOW)).allowed
    forced = await h.ledger.reserve("while-away", charges, 2 * USD, NOW, force=True)
    assert forced.allowed
    assert forced.states[0].verdict is BudgetVerdict.WOULD_DENY
    assert await h.used("tenant") == 3 * USD
    assert not (await h.ledger.reserve("after", charges, 1, NOW)).allowed
