"""The ledger on a 3-primary Redis Cluster: no limit is ever exceeded.

A request under the tenant budget ({t:acme}) and the per-user and global budgets
({global}) is reserved in two slots, on two primaries (store.sharded). The
zero-overspend tests of tests/integration/test_zero_overspend.py run here on the
cluster, with and without leases; then a slot migration and a primary failover under
load: nothing acknowledged is lost, nothing is counted twice, no counter passes its
limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import redis
import yaml
from redis.asyncio import Redis, RedisCluster

from budget_guard.client import BudgetGuard, DirectBackend
from budget_guard.domain.decision import ChargePlanner, plan_charges
from budget_guard.domain.money import parse_usd
from budget_guard.domain.resolution import Attribution, RequestIdentity
from budget_guard.localservices import RedisClusterSet, RedisSentinelSet, WebhookProcess
from budget_guard.store.connect import redis_client, sync_redis_client
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.history import read_attribution, read_review_history
from budget_guard.store.keys import KeySchema, hash_tag
from budget_guard.store.ledger import RequestIdTaken, SettlementStatus
from budget_guard.store.notices import Notices
from budget_guard.store.published_config import PublishedConfigStore
from budget_guard.store.sharded import ShardedLedger
from budget_guard.store.usage import read_usage
from tests.fixtures.client import IDENTITY, OPENAI_MODEL, counter
from tests.fixtures.failure_modes import CHAT
from tests.fixtures.webhook import budget as budget_manifest
from tests.integration import concurrency_worker
from tests.integration.concurrency_worker import NOW, USERS, assert_varied_costs_fit, snapshot
from tests.integration.test_client_guard import CHARGED, MANIFESTS, REQUEST, USAGE
from tests.waiting import eventually

pytestmark = pytest.mark.redis

PROCESSES, TASKS = 4, 50
KEYS = KeySchema()


def flush(cluster: RedisClusterSet) -> None:
    for port in cluster.primary_ports():
        with redis.Redis(port=port) as node:
            node.flushall()


def hammer(
    cluster: RedisClusterSet,
    costs: list[int],
    limits: tuple[str, str, str],
    use_leases: bool,
) -> list[tuple[bool, int, str]]:
    flush(cluster)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [
            pool.submit(
                concurrency_worker.run,
                cluster.cluster_url,
                worker,
                TASKS,
                costs,
                limits,
                use_leases,
            )
            for worker in range(PROCESSES)
        ]
        return [outcome for future in futures for outcome in future.result()]


def counters(cluster: RedisClusterSet, limits: tuple[str, str, str]) -> dict[str, int]:
    compiled = snapshot(*limits)
    used: dict[str, int] = Counter()
    with sync_redis_client(cluster.cluster_url) as client:
        for index in range(USERS):
            identity = RequestIdentity(tenant="acme", user=f"user-{index}")
            for charge in plan_charges(compiled, identity, NOW):
                key = KEYS.counter(charge.budget, charge.window, charge.subject)
                reserved = int(client.hget(key, "used") or 0)  # type: ignore[arg-type]
                leased = int(client.hget(key, "leased") or 0)  # type: ignore[arg-type]
                name = charge.budget.ref.name
                used["leased"] += leased
                used[f"user-{index}" if name == "per-user" else name] = reserved
    return used


@pytest.fixture(autouse=True)
def tenant_apart(redis_cluster: RedisClusterSet) -> None:
    """The tenant's slot on another primary than {global}'s (moved there if need be)."""
    tenant, shared = (redis_cluster.key_slot(tag) for tag in ("{t:acme}", "{global}"))
    if redis_cluster.slot_owner(tenant) == redis_cluster.slot_owner(shared):
        other = next(
            port
            for port in redis_cluster.primary_ports()
            if port != redis_cluster.slot_owner(shared)
        )
        redis_cluster.migrate_slot(tenant, other)


def test_the_tenant_and_the_global_budgets_live_on_different_primaries(
    redis_cluster: RedisClusterSet,
) -> None:
    (tenant_charge, global_charge) = (
        c
        for c in plan_charges(
            snapshot("0.005", "0.037", "0.040"), RequestIdentity(tenant="acme", user="u"), NOW
        )
        if c.budget.ref.name in ("tenant", "global")
    )
    owners = {
        redis_cluster.slot_owner(
            redis_cluster.key_slot(KEYS.counter(c.budget, c.window, c.subject))
        )
        for c in (tenant_charge, global_charge)
    }
    assert len(owners) == 2  # else the tests below would not span two primaries


@pytest.mark.parametrize("use_leases", [False, True], ids=["ledger", "leases"])
def test_exactly_n_requests_fit_on_a_cluster(
    redis_cluster: RedisClusterSet, use_leases: bool
) -> None:
    cost = 1_000
    limits = ("0.005", "0.037", "0.040")  # the tenant budget holds exactly 37 requests
    outcomes = hammer(redis_cluster, [cost], limits, use_leases)
    allowed = [o for o in outcomes if o[0]]
    assert len(outcomes) == PROCESSES * TASKS
    used = counters(redis_cluster, limits)
    assert used["leased"] == 0  # every lease went back
    # Never over: the tenant's 37. A request can be denied falsely while another's
    # tenant part waits to be taken back, so a few fewer may fit than on one primary.
    assert 33 <= len(allowed) <= 37
    assert used["tenant"] == used["global"] == len(allowed) * cost
    per_user = Counter(user for _, _, user in allowed)
    for index in range(USERS):
        user = f"user-{index}"
        assert used[user] == per_user[user] * cost <= 5 * cost


@pytest.mark.parametrize("use_leases", [False, True], ids=["ledger", "leases"])
def test_varied_costs_never_overspend_on_a_cluster(
    redis_cluster: RedisClusterSet, use_leases: bool
) -> None:
    limits = ("0.009", "0.050", "0.045")
    outcomes = hammer(redis_cluster, [700, 1_000, 2_300], limits, use_leases)
    used = counters(redis_cluster, limits)
    assert used["leased"] == 0
    assert_varied_costs_fit(outcomes, used)


# -- under load: a slot migration, a primary failover ----------------------------------

LIMIT_USD = "0.5"  # reached during the run: the limits are tested under the disturbance
LIMIT = 500_000
DENIED_AT_THE_LIMIT = 40  # the 8 workers, denied 5 times each on average


@dataclass
class Run:
    settled: int = 0  # acknowledged settlements, micro-USD
    in_doubt: int = 0  # calls that failed after they may have run, at most this much
    denied: int = 0
    allowed: int = 0
    failures: list[float] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)


async def settle_loop(ledger: ShardedLedger, run: Run, stop: asyncio.Event, worker: int) -> None:
    planner = ChargePlanner(snapshot("1.0", LIMIT_USD, LIMIT_USD))
    attribution = Attribution(tenant="acme", user=f"user-{worker}", feature=None, model="m")
    turn = 0
    while not stop.is_set():
        turn += 1
        cost = (700, 1_000, 2_300)[(worker + turn) % 3]
        now = dt.datetime.now(dt.UTC)
        charges = planner.plan(RequestIdentity(tenant="acme", user=f"user-{worker}"), now)
        request_id = str(uuid.uuid4())
        try:
            decision = await ledger.reserve(request_id, charges, cost, now, attribution)
        except (LedgerUnavailable, RequestIdTaken):  # (taken: redis-py sent it twice)
            run.failures.append(time.monotonic())
            run.in_doubt += cost  # it may have been reserved (and is then swept later)
            await asyncio.sleep(0.02)
            continue
        if not decision.allowed:
            run.denied += 1
            await asyncio.sleep(0.01)
            continue
        run.allowed += 1
        while True:  # a settlement is retried until it lands: exactly once
            try:
                settlement = await ledger.settle(request_id, cost - 100, now)
                break
            except LedgerUnavailable:
                run.failures.append(time.monotonic())
                await asyncio.sleep(0.02)
        # "already": an earlier attempt of ours ran, its answer lost. Either way it is
        # applied exactly once.
        assert settlement.status in (SettlementStatus.SETTLED, SettlementStatus.ALREADY)
        run.settled += cost - 100
        run.successes.append(time.monotonic())


def spend(cluster: RedisClusterSet) -> dict[str, tuple[int, int]]:
    """(used, spent) of the tenant and the global counters."""
    now = dt.datetime.now(dt.UTC)
    compiled = snapshot("1.0", LIMIT_USD, LIMIT_USD)
    found = {}
    with sync_redis_client(cluster.cluster_url) as client:
        for charge in plan_charges(compiled, RequestIdentity(tenant="acme", user="x"), now):
            if charge.budget.ref.name in ("tenant", "global"):
                key = KEYS.counter(charge.budget, charge.window, charge.subject)
                used, spent = client.hmget(key, ["used", "spent"])  # type: ignore[misc]
                found[charge.budget.ref.name] = (int(used or 0), int(spent or 0))
    return found


async def under_load(cluster: RedisClusterSet, disturb: str) -> tuple[Run, float]:
    flush(cluster)
    client = redis_client(cluster.cluster_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    ledger = ShardedLedger(client)
    run, stop = Run(), asyncio.Event()
    workers = [asyncio.create_task(settle_loop(ledger, run, stop, w)) for w in range(8)]
    peak = {"tenant": 0, "global": 0}

    async def watch() -> None:  # no counter is ever seen above its limit
        while not stop.is_set():
            try:
                seen = await asyncio.to_thread(spend, cluster)
            except (redis.RedisError, OSError):  # the failover: ask again
                seen = {}
            for name, (used, _) in seen.items():
                peak[name] = max(peak[name], used)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        # Disturb once the load runs, with most of the limit left to reach under it (a
        # fixed wait let a fast or a slow machine spend it all before).
        await eventually(
            lambda: run.settled, lambda settled: settled >= LIMIT // 10, every=0.01, what="load"
        )
        started = time.monotonic()
        if disturb == "migration":
            slot = cluster.key_slot("{t:acme}")
            owners = {cluster.slot_owner(slot), cluster.slot_owner(cluster.key_slot("{global}"))}
            target = next(p for p in cluster.primary_ports() if p not in owners)
            await asyncio.to_thread(cluster.migrate_slot, slot, target, 5)
            assert cluster.slot_owner(slot) == target
        else:
            victim = cluster.slot_owner(cluster.key_slot("{global}"))
            old = cluster.kill_primary(victim)
            await asyncio.to_thread(cluster.wait_for_failover, old)
        # The load goes on through the disturbance until the limit stops it: every worker
        # is denied a few times.
        await eventually(
            lambda: run.denied,
            lambda denied: denied >= DENIED_AT_THE_LIMIT,
            within=60,
            what="the limit reached after the disturbance",
        )
        stop.set()
        await asyncio.gather(*workers)
        await watcher
        # Parts left reserved by calls that failed are swept like any reservation.
        await ledger.sweep_expired(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    finally:
        stop.set()
        for task in (*workers, watcher):
            task.cancel()
        await client.aclose()
        if disturb == "failover":
            await asyncio.to_thread(cluster.restore)
    assert max(peak.values()) <= LIMIT, peak
    return run, started


async def test_a_slot_migration_under_load_loses_nothing_and_overspends_nothing(
    redis_cluster: RedisClusterSet,
) -> None:
    run, started = await under_load(redis_cluster, "migration")
    found = spend(redis_cluster)
    assert run.allowed > 100 and run.successes and max(run.successes) > started
    for name, (used, spent) in found.items():
        assert used == spent <= LIMIT, name  # nothing left reserved after the sweep
        # Nothing acknowledged is lost; at most what failed in doubt is added.
        assert run.settled <= spent <= run.settled + run.in_doubt, (name, run)
    print(
        f"\nslot migration: {run.allowed} allowed, {run.denied} denied, "
        f"{len(run.failures)} calls failed during it, spent {found}"
    )


async def test_a_primary_failover_under_load_overspends_nothing(
    redis_cluster: RedisClusterSet,
) -> None:
    run, started = await under_load(redis_cluster, "failover")
    found = spend(redis_cluster)
    resumed = [at for at in run.successes if run.failures and at > min(run.failures)]
    assert resumed and min(resumed) - started < 10
    for name, (used, spent) in found.items():
        assert used == spent <= LIMIT, name
        # A failover can lose what the dead primary acknowledged and never replicated
        # (measured: none on loopback); it never counts anything twice.
        assert spent <= run.settled + run.in_doubt, (name, run)
    lost = {name: max(0, run.settled - spent) for name, (_, spent) in found.items()}
    print(
        f"\nprimary failover: {run.allowed} allowed, {run.denied} denied, "
        f"{len(run.failures)} calls failed; lost {lost}; decisions back "
        f"{min(resumed) - started:.2f} s after the kill"
    )


# -- the webhook on a redis+cluster:// URL ---------------------------------------------


@pytest.mark.parametrize("leases", ["true", "false"])
async def test_the_webhook_on_a_cluster_url_never_overspends(
    redis_cluster: RedisClusterSet, tmp_path: Path, leases: str
) -> None:
    flush(redis_cluster)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(
        yaml.safe_dump_all(
            [
                budget_manifest("acme", "0.40", tenant="acme"),
                budget_manifest("everyone", "0.30"),  # binds first: {global}
                budget_manifest("per-user", "0.05", user="*"),
            ]
        )
    )
    args = ["--budgets", str(budgets), "--redis-url", redis_cluster.cluster_url]
    # On Cluster the timeout also counts this process's own wait (there is no one
    # pipelined connection to judge): on a busy 2-core machine it needs more than the
    # default.
    args += [
        "--local-leases",
        leases,
        "--ledger-timeout-ms",
        "1000",
        "--gateway-timeout-ms",
        "2000",
    ]
    answers: list[tuple[int, int]] = []
    with WebhookProcess(args, workdir=tmp_path) as webhook:
        url = webhook.check_url + "/v1/chat/completions"
        async with aiohttp.ClientSession() as session:

            async def one(number: int) -> None:
                headers = {"x-budget-tenant": "acme", "x-budget-user": f"u{number % 12}"}
                async with session.post(url, json=CHAT, headers=headers) as answer:
                    await answer.read()
                    cost = answer.headers.get("x-budget-estimated-cost-usd", "0")
                    answers.append((answer.status, parse_usd(cost, "cost", allow_zero=True)))

            numbers = iter(range(300))

            async def client() -> None:
                for number in numbers:
                    await one(number)

            await asyncio.gather(*(client() for _ in range(16)))  # 16 in flight
    allowed = sum(cost for status, cost in answers if status == 200)
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {200, 429} and statuses[429] > 0, statuses
    with sync_redis_client(redis_cluster.cluster_url) as client:
        for pattern in ("bg:{t:acme}:c:*", "bg:{global}:c:*everyone*"):
            keys = list(client.scan_iter(match=pattern, _type="hash"))  # type: ignore[union-attr]
            used = sum(int(client.hget(k, "used") or 0) for k in keys)  # type: ignore[arg-type]
            leased = sum(int(client.hget(k, "leased") or 0) for k in keys)  # type: ignore[arg-type]
            # The webhook stopped: local decisions committed, leases returned.
            assert (used, leased) == (allowed, 0), pattern
    assert allowed <= 300_000


# -- what the operator and the reports read, on a cluster -------------------------------


async def test_status_reads_events_restore_and_config_work_on_a_cluster(
    redis_cluster: RedisClusterSet,
) -> None:
    flush(redis_cluster)
    client = redis_client(redis_cluster.cluster_url, socket_timeout=2)
    assert isinstance(client, RedisCluster)
    ledger = ShardedLedger(client)
    compiled = snapshot("0.005", "0.010", "0.040")
    planner = ChargePlanner(compiled)
    now = dt.datetime.now(dt.UTC)
    try:
        for number in range(10):  # the tenant's 0.010 is reached: an event in {t:acme}
            user = f"user-{number % 3}"
            charges = planner.plan(RequestIdentity(tenant="acme", user=user), now)
            attribution = Attribution(tenant="acme", user=user, feature="chat", model="m")
            decision = await ledger.reserve(f"r{number}", charges, 1_000, now, attribution)
            assert decision.allowed
            await ledger.settle(f"r{number}", 1_000, now)
        reader = cast(Redis, client)  # as store.connect.ledger_reader hands it out
        usages = {u.budget.ref.name: u for u in await read_usage(reader, compiled, now, KEYS)}
        assert usages["tenant"].spent == usages["global"].spent == 10_000
        history = await read_review_history(reader, KEYS, list(compiled.budgets), now)
        assert (
            sum(history[[b.ref.name for b in compiled.budgets].index("tenant")][0].values())
            == 10_000
        )
        attributed = await read_attribution(reader, KEYS, [now.date()])
        assert attributed  # the index in {global}, the tenant's hashes in {t:acme}

        notices = Notices(client, KEYS)
        seen = await notices.read(block_ms=10)
        assert any(n.kind == "exhausted" and n.budget.endswith("/tenant") for n in seen), seen
        for notice in seen:
            await notices.done(notice)
        assert await notices.read(block_ms=10) == []  # each stream's cursor moved

        tenant = next(
            c
            for c in planner.plan(RequestIdentity(tenant="acme", user="x"), now)
            if c.budget.ref.name == "tenant"
        )
        key = KEYS.counter(tenant.budget, tenant.window, None)
        await client.delete(key)  # Redis lost it
        added = await notices.restore(tenant.budget, tenant.window.key, 10_000, 2**42)
        assert added == 10_000

        store = PublishedConfigStore(client, KEYS)
        version, changed = await store.publish([{"a": 1}], [], "now")
        assert changed and await store.version() == version
        published = await store.read()
        assert published is not None and published.budgets == [{"a": 1}]
        changes = store.changes(check_seconds=0.1)
        await anext(changes)
        await asyncio.wait_for(anext(changes), 2)  # polled on Cluster
        await changes.aclose()
    finally:
        await client.aclose()


@pytest.fixture
async def sharded(redis_cluster: RedisClusterSet) -> AsyncIterator[ShardedLedger]:
    """A Cluster ledger on emptied primaries; its client is ``.cluster``."""
    flush(redis_cluster)
    client = redis_client(redis_cluster.cluster_url, socket_timeout=2)
    assert isinstance(client, RedisCluster)
    try:
        yield ShardedLedger(client)
    finally:
        await client.aclose()


async def test_leases_granted_in_an_answer_never_read_go_back_in_every_slot(
    sharded: ShardedLedger,
) -> None:
    """The Cluster side of tests/integration/test_leases.py's lost answer: the parts'
    records hold their grants, each given back in its own slot, once."""
    ledger, client = sharded, sharded.cluster
    planner = ChargePlanner(snapshot("1", "1", "1"))
    now = dt.datetime.now(dt.UTC)
    charges = planner.plan(RequestIdentity(tenant="acme", user="u"), now)
    counters = [KEYS.counter(c.budget, c.window, c.subject) for c in charges]
    decision, grants = await ledger.reserve_and_lease(
        "lost", charges, 1_000, now, wants=[100_000] * len(charges)
    )
    assert decision.allowed and all(grant > 0 for grant in grants)
    assert {hash_tag(key) for key in counters} == {"{global}", "{t:acme}"}
    # The answer above is taken for lost: the grants go back from the records.
    assert await ledger.forget_grants("lost", counters)
    after = [await client.hmget(key, "used", "leased") for key in counters]
    assert all(int(used) == 1_000 and int(leased) == 0 for used, leased in after), after
    assert await ledger.forget_grants("lost", counters)  # once: nothing more
    assert [await client.hmget(key, "used", "leased") for key in counters] == after
    assert not await ledger.forget_grants("never", counters)


async def test_the_settled_stream_names_a_tenants_request_on_a_cluster(
    sharded: ShardedLedger,
) -> None:
    """The stream is written from the {global} anchor, whose history lines are not the
    tenant's: the anchor's plan carries the request's attribution for it."""
    ledger, client = sharded, sharded.cluster
    planner = ChargePlanner(snapshot("1", "1", "1"))
    now = dt.datetime.now(dt.UTC)
    charges = planner.plan(RequestIdentity(tenant="acme", user="u7"), now)
    attribution = Attribution(tenant="acme", user="u7", feature="chat", model="m")
    assert (await ledger.reserve("named", charges, 1_000, now, attribution)).allowed
    settled = await ledger.settle("named", 700, now)
    assert settled.attribution == attribution
    (_, entry), *_ = await client.xrevrange(KEYS.settled, count=1)
    fields = {key.decode(): value.decode() for key, value in entry.items()}
    assert fields["request"] == "named" and fields["cost"] == "700"
    assert (fields["tenant"], fields["user"], fields["feature"], fields["model"]) == (
        "acme",
        "u7",
        "chat",
        "m",
    )


# -- the client library on every topology ----------------------------------------------


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_the_client_library_reserves_and_settles_on_sentinel_and_cluster_urls(
    request: pytest.FixtureRequest, topology: str
) -> None:
    if topology == "sentinel":
        sentinel: RedisSentinelSet = request.getfixturevalue("redis_sentinel")
        url = sentinel.url
    else:
        nodes: RedisClusterSet = request.getfixturevalue("redis_cluster")
        flush(nodes)
        url = nodes.cluster_url
    client = redis_client(url, socket_timeout=2)
    if topology == "sentinel":
        await client.flushdb()
    guard = BudgetGuard(DirectBackend(url), **IDENTITY)
    try:
        await PublishedConfigStore(client, KEYS).publish(MANIFESTS, [], "2030-05-10T00:00:00Z")
        async with guard.call(REQUEST) as call:
            call.record(USAGE)
        spent = await counter(cast(Redis, client), MANIFESTS, "acme", OPENAI_MODEL)
        assert spent.spent == CHARGED
    finally:
        await guard.aclose()
        await client.aclose()
