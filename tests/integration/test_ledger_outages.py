"""A real outage is still an outage: Redis killed mid-burst, or slow to answer.

Failure modes apply within --ledger-timeout-ms; the webhook recovers by itself when
Redis is back; fail-open spend stays within the budget's allowance and is recorded
once Redis is back; a Redis that answers, only slowly, is judged slow.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync

from budget_guard.localservices import RedisServer, WebhookProcess
from tests.fixtures.failure_modes import (
    CLOSED,
    OPEN,
    Answer,
    check,
    recovered,
    write_open_and_closed_budgets,
)
from tests.fixtures.proxy import DelayingProxy
from tests.waiting import eventually

pytestmark = pytest.mark.redis

FAIL_OPEN_LIMIT = 100_000  # $0.10: about ten checks of $0.01
ALLOWED_BEFORE_KILL = 40  # per budget
RECOVERED_ANSWERS = 40  # answered after Redis is back: each one of them must be healthy


def outage_shown(during: list[Answer]) -> bool:
    refused = {a.tenant for a in during if a.code == "budget_unavailable"}
    return refused == {"open", "closed"} and any(a.degraded for a in during)


async def steady_load(url: str, stop: asyncio.Event, answers: list[Answer]) -> None:
    async with aiohttp.ClientSession() as session:

        async def worker(headers: dict[str, str]) -> None:
            while not stop.is_set():
                answers.append(await check(session, url, headers))
                await asyncio.sleep(0.005)

        await asyncio.gather(*(worker(OPEN if i % 2 else CLOSED) for i in range(8)))


def counter_used(redis_url: str, tenant: str) -> tuple[int, int]:
    client = redis_sync.Redis.from_url(redis_url)
    (key,) = list(client.scan_iter(f"bg:{{t:{tenant}}}:c:*", _type="hash"))
    used, leased = (int(v or 0) for v in client.hmget(key, "used", "leased"))
    client.close()
    return used, leased


@pytest.mark.parametrize("leases", ["true", "false"])
async def test_redis_killed_mid_burst_then_back(tmp_path: Path, leases: str) -> None:
    with RedisServer(durable=True) as redis:  # what Redis answered survives the kill
        args = [
            "--budgets",
            str(write_open_and_closed_budgets(tmp_path / "b.yaml", "0.10")),
            "--redis-url",
            redis.url,
            "--ledger-timeout-ms",
            "50",
            "--local-leases",
            leases,
        ]
        answers: list[Answer] = []
        with WebhookProcess(args, workdir=tmp_path) as webhook:
            stop = asyncio.Event()
            load = asyncio.create_task(steady_load(webhook.check_url, stop, answers))
            await eventually(  # mid-burst: both budgets allowed a steady stream
                lambda: Counter(a.tenant for a in answers if a.status == 200),
                lambda allowed: min(allowed["open"], allowed["closed"]) >= ALLOWED_BEFORE_KILL,
                what="the load allowed on both budgets",
            )
            before = len(answers)
            os.kill(redis.pid, signal.SIGKILL)
            port = redis.port
            redis.stop_process()
            # Redis stays away until each failure mode has shown: the open budget fails open
            # until its allowance is spent, the closed one refuses.
            await eventually(
                lambda: answers[before:],
                outage_shown,
                within=30,
                what="fail open, its allowance spent, and fail closed",
            )
            during = answers[before:]
            redis.start(port)
            await recovered(webhook.api_url)  # reconnected by itself, the journal replayed
            after_restart = len(answers)
            await eventually(
                lambda: answers[after_restart:],
                lambda seen: len(seen) >= RECOVERED_ANSWERS,
                what="answers after the restart",
            )
            stop.set()
            await load
        # The webhook has stopped: local decisions committed, leases returned, and the
        # journal of what failed open replayed: every allowed dollar is counted, once.
        # Beside it only lease room can remain: a lease Redis granted in a reply the kill
        # took away is known to no process and stays counted until the period ends
        # (docs/reliability.md, "Faults on the decision path"): more spend, never less.
        for tenant in ("open", "closed"):
            allowed = sum(a.cost for a in answers if a.tenant == tenant and a.status == 200)
            used, leased = counter_used(redis.url, tenant)
            assert used - leased == allowed, (tenant, used, leased)

    outcomes = Counter((a.tenant, a.status, a.code, a.degraded) for a in answers)
    assert set(outcomes) <= {
        ("open", 200, "", False),
        ("open", 200, "", True),  # fail open, within the allowance
        ("open", 503, "budget_unavailable", False),  # the allowance is spent
        ("closed", 200, "", False),
        ("closed", 503, "budget_unavailable", False),
    }, outcomes
    assert max(a.seconds for a in answers) < 0.5  # every answer well before Envoy's 200 ms x 2
    degraded = [a for a in during if a.degraded]
    assert 0 < sum(a.cost for a in degraded) <= FAIL_OPEN_LIMIT
    assert any(a.code == "budget_unavailable" for a in during if a.tenant == "open")
    # A closed budget refuses what leases held here cannot cover (leases are budget
    # already taken from Redis, so deciding from them needs no Redis).
    assert any(a.code == "budget_unavailable" for a in during if a.tenant == "closed")
    back = answers[after_restart:]
    late = Counter((a.tenant, a.status, a.code, a.degraded) for a in back)
    assert back, "no answers after the restart"
    assert set(late) <= {("open", 200, "", False), ("closed", 200, "", False)}, late


async def test_a_slow_redis_is_detected_as_slow_and_a_quick_one_is_not(tmp_path: Path) -> None:
    with RedisServer() as redis, DelayingProxy(redis.port, delay_seconds=0.01) as proxy:
        args = [
            "--budgets",
            str(write_open_and_closed_budgets(tmp_path / "b.yaml", "0.10")),
            "--redis-url",
            proxy.url,
            "--ledger-timeout-ms",
            "50",
            "--local-leases",
            "false",
        ]
        with WebhookProcess(args, workdir=tmp_path) as webhook:
            url = webhook.check_url
            async with aiohttp.ClientSession() as session:
                quick = [await check(session, url, OPEN) for _ in range(5)]
                assert all(a.status == 200 and not a.degraded for a in quick)
                proxy.delay_seconds = 0.2  # Redis answers, four times too late
                slow = [await check(session, url, headers) for headers in (OPEN, CLOSED)]
                assert slow[0].status == 200 and slow[0].degraded
                assert (slow[1].status, slow[1].code) == (503, "budget_unavailable")
                assert all(a.seconds < 0.2 for a in slow)  # judged within the timeout
                proxy.delay_seconds = 0.0
                await eventually(
                    lambda: check(session, url, OPEN),
                    lambda again: again.status == 200 and not again.degraded,
                    within=10,
                    every=0.1,
                    what="a clean allow once Redis is fast again",
                )
