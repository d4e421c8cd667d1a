"""The ledger on Sentinel, its primary killed under load.

Decisions continue on the promoted replica within a bounded time; what Redis's
asynchronous replication loses is measured (and bounded: it is what the primary
acknowledged in its last moments); and the operator's restore from the spend a status
sync recorded fills the gap up to that sync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync
import yaml

from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.localservices import RedisSentinelSet, WebhookProcess
from budget_guard.store.connect import ledger_client, sync_redis_client
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.ledger import Ledger
from budget_guard.store.notices import Notices
from tests.factories import budget
from tests.fixtures.failure_modes import Answer, check
from tests.fixtures.webhook import budget as budget_manifest
from tests.waiting import eventually

pytestmark = pytest.mark.redis

# A failover takes down-after-milliseconds (1 s in the test set) plus an election and
# the client asking the sentinels again: about 2.3 s measured. Decisions must be back
# well within this.
FAILOVER_BOUND_SECONDS = 10.0
SYNC_INTERVAL_SECONDS = 0.2  # how often the "status sync" below records spend
REPLICA_LAG_SECONDS = 1.5
SETTLED_BEFORE_THE_LAG = 50_000  # micro-USD: the load runs, a status sync has seen it
SETTLED_AFTER_THE_FAILOVER = 40
ALLOWED_BEFORE_THE_KILL = 20
ALLOWED_AFTER_THE_FAILOVER = 20


@dataclass
class Load:
    """What the load saw: spend acknowledged per second of the run, and failures."""

    settled: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, micros)
    failures: list[float] = field(default_factory=list)
    synced: list[tuple[float, int]] = field(default_factory=list)  # status sync samples

    def acknowledged(self, until: float = float("inf")) -> int:
        return sum(amount for at, amount in self.settled if at <= until)

    def first_success_after(self, moment: float) -> float | None:
        after = [at for at, _ in self.settled if at > moment]
        return min(after) if after else None


async def reserve_and_settle(
    ledger: Ledger, planner: ChargePlanner, load: Load, stop: asyncio.Event, worker: int
) -> None:
    costs = [700, 1_000, 2_300]
    turn = 0
    while not stop.is_set():
        turn += 1
        cost = costs[(worker + turn) % len(costs)]
        now = dt.datetime.now(dt.UTC)
        charges = planner.plan(RequestIdentity(tenant="acme", user=f"user-{worker}"), now)
        try:
            decision = await ledger.reserve(str(uuid.uuid4()), charges, cost, now)
            assert decision.allowed
            settlement = await ledger.settle(decision.request_id, cost - 100, now)
            load.settled.append((time.monotonic(), settlement.newly_charged_micros))
        except LedgerUnavailable:
            load.failures.append(time.monotonic())
            await asyncio.sleep(0.02)


async def status_sync(
    ledger: Ledger, planner: ChargePlanner, load: Load, stop: asyncio.Event
) -> None:
    """What the operator's status sync does for the tenant budget: record its spend."""
    while not stop.is_set():
        now = dt.datetime.now(dt.UTC)
        charges = planner.plan(RequestIdentity(tenant="acme", user="user-0"), now)
        asked_at = time.monotonic()  # the spend read includes all acknowledged before
        try:
            (usage,) = await ledger.usage([c for c in charges if c.budget.ref.name == "tenant"])
            load.synced.append((asked_at, usage.spent))
        except LedgerUnavailable:
            pass
        await asyncio.sleep(SYNC_INTERVAL_SECONDS)


async def test_a_failover_under_load_loses_little_and_restore_fills_it(
    redis_sentinel: RedisSentinelSet,
) -> None:
    with sync_redis_client(redis_sentinel.url) as primary:
        primary.flushdb()
    snapshot = BudgetSnapshot([budget("tenant", "1000", tenant="acme")])
    planner = ChargePlanner(snapshot)
    client = ledger_client(redis_sentinel.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    ledger = Ledger(client)
    load, stop = Load(), asyncio.Event()

    def start_load() -> list[asyncio.Task[None]]:
        workers = [reserve_and_settle(ledger, planner, load, stop, w) for w in range(8)]
        return [asyncio.create_task(work) for work in workers]

    tasks = [*start_load(), asyncio.create_task(status_sync(ledger, planner, load, stop))]
    try:
        await eventually(  # spend settled, and recorded by a status sync
            lambda: load.synced,
            lambda synced: any(spent >= SETTLED_BEFORE_THE_LAG for _, spent in synced),
            what="spend settled and synced",
        )
        # The replica falls behind (stopped for a moment, as a slow link or a busy
        # node would): what the primary acknowledges meanwhile never reaches it.
        replica = next(p for p in redis_sentinel.data_nodes if p != redis_sentinel.primary_port)
        with redis_sync.Redis(port=redis_sentinel.primary_port) as node:
            # Else the kernel's socket buffers would carry the lag to the replica anyway.
            node.config_set("client-output-buffer-limit", "replica 16kb 16kb 0")
        os.kill(redis_sentinel.data_nodes[replica].pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(REPLICA_LAG_SECONDS)
            old = redis_sentinel.kill_primary()
            killed_at = time.monotonic()
        finally:
            os.kill(redis_sentinel.data_nodes[replica].pid, signal.SIGCONT)
        # The load pauses at the kill, so that what the failover lost can be measured
        # before new spend mixes in; the operator's restore runs, then the load resumes.
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(redis_sentinel.wait_for_failover, old)
        failed_over = time.monotonic() - killed_at

        now = dt.datetime.now(dt.UTC)
        (charge,) = planner.plan(RequestIdentity(tenant="acme", user="user-0"), now)
        (usage,) = await ledger.usage([charge])
        acknowledged = load.acknowledged()
        lost = acknowledged - usage.spent
        # Replication is asynchronous: only what the primary acknowledged while the
        # replica lagged can be gone (a settlement the kill cut off never counts
        # twice: its reply was lost, and so was its effect).
        lag_start = killed_at - REPLICA_LAG_SECONDS - 0.1
        assert 0 < lost <= load.acknowledged(killed_at) - load.acknowledged(lag_start)

        # The operator's restore: the counter goes back up to the last synced spend.
        recorded = max(spent for at, spent in load.synced if at < killed_at)
        added = await Notices(client).restore(
            charge.budget, charge.window.key, recorded, int(charge.window.end.timestamp() * 1000)
        )
        assert added == recorded - usage.spent > 0  # the sync during the lag saw it
        (restored,) = await ledger.usage([charge])
        remaining = acknowledged - restored.spent
        # What is left is what was settled after the last sync before the kill (an
        # acknowledgement is time-stamped when its task runs again, so allow for a busy
        # event loop: 1 s).
        last_sync = max(at for at, _ in load.synced if at < killed_at)
        assert 0 <= remaining < lost
        assert remaining <= acknowledged - load.acknowledged(last_sync - 1.0)

        stop.clear()
        restarted_at = time.monotonic()
        tasks = start_load()
        await eventually(  # decisions continue on the new primary
            lambda: [at for at, _ in load.settled if at > restarted_at],
            lambda settled: len(settled) >= SETTLED_AFTER_THE_FAILOVER,
            what="settlements on the new primary",
        )
        stop.set()
        await asyncio.gather(*tasks)
        resumed = load.first_success_after(restarted_at)
        assert failed_over < FAILOVER_BOUND_SECONDS
        assert resumed is not None and resumed - restarted_at < 1.0  # on the new primary
        print(
            f"\nsentinel failover ({REPLICA_LAG_SECONDS} s replica lag): acknowledged "
            f"{acknowledged} micro-USD, lost {lost}; restore from the last sync added {added}, "
            f"{remaining} remain lost; failed over {failed_over:.2f} s after the kill"
        )
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await client.aclose()
        await asyncio.to_thread(redis_sentinel.restore)


def sentinel_budgets(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump_all(
            [budget_manifest("closed", "1000", tenant="closed", failureMode="Closed")]
        )
    )
    return path


def allowed_after_the_outage(answers: list[tuple[float, Answer]], killed_at: float) -> int:
    """How many checks were allowed after the last one refused since the kill (0 while
    no refusal shows the failover was noticed)."""
    refused = [at for at, a in answers if at > killed_at and a.status == 503]
    if not refused:
        return 0
    return sum(1 for at, a in answers if at > max(refused) and a.status == 200)


async def test_the_webhook_on_a_sentinel_url_decides_through_a_failover(
    redis_sentinel: RedisSentinelSet, tmp_path: Path
) -> None:
    with sync_redis_client(redis_sentinel.url) as primary:
        primary.flushdb()
    args = [
        "--budgets",
        str(sentinel_budgets(tmp_path / "b.yaml")),
        "--redis-url",
        redis_sentinel.url,
        "--ledger-timeout-ms",
        "100",
        "--local-leases",
        "false",
    ]
    answers: list[tuple[float, Answer]] = []
    stop = asyncio.Event()

    async def steady() -> None:
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                while not stop.is_set():
                    answer = await check(session, webhook.check_url, {"x-budget-tenant": "closed"})
                    answers.append((time.monotonic(), answer))
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(worker() for _ in range(4)))

    try:
        with WebhookProcess(args, workdir=tmp_path) as webhook:
            load = asyncio.create_task(steady())
            await eventually(
                lambda: [a for _, a in answers if a.status == 200],
                lambda allowed: len(allowed) >= ALLOWED_BEFORE_THE_KILL,
                what="checks allowed before the kill",
            )
            old = redis_sentinel.kill_primary()
            killed_at = time.monotonic()
            await asyncio.to_thread(redis_sentinel.wait_for_failover, old)
            await eventually(
                lambda: allowed_after_the_outage(answers, killed_at),
                lambda allowed: allowed >= ALLOWED_AFTER_THE_FAILOVER,
                within=30,
                what="checks allowed again after the failover",
            )
            stop.set()
            await load
    finally:
        await asyncio.to_thread(redis_sentinel.restore)

    outcomes = Counter((a.status, a.code) for _, a in answers)
    # (429 overloaded: a check shed by this process when the machine is busy.)
    assert set(outcomes) <= {(200, ""), (503, "budget_unavailable"), (429, "overloaded")}
    outage = [at for at, a in answers if at > killed_at and a.status == 503]
    assert outage, "the failover was not noticed"
    back = [at for at, a in answers if at > max(outage) and a.status == 200]
    assert back and min(back) - killed_at < FAILOVER_BOUND_SECONDS
    before = [a for at, a in answers if at < killed_at]
    assert before and all(a.status == 200 for a in before)
    # Closed: nothing was let through unrecorded. What the new primary holds is what
    # was allowed, less what the old one acknowledged and never replicated.
    allowed = sum(a.cost for _, a in answers if a.status == 200)
    with sync_redis_client(redis_sentinel.url) as primary:
        (key,) = list(primary.scan_iter("bg:{t:closed}:c:*", _type="hash"))
        used = int(primary.hget(key, "used") or 0)
    lost = allowed - used
    recent = sum(a.cost for at, a in answers if killed_at - 1 < at <= killed_at and a.status == 200)
    assert -4 * max(a.cost for _, a in answers) <= lost <= recent
    print(
        f"\nwebhook on sentinel: {len(answers)} checks, decisions back "
        f"{min(back) - killed_at:.2f} s after the kill, {lost} micro-USD reserved and lost"
    )
