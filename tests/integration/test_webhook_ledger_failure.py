"""Redis down or slow: each budget's failureMode decides, nothing is lost, no restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from budget_guard.localservices import RedisServer
from tests.fixtures.webhook import AGENT, RunningWebhook, budget, start_webhook
from tests.waiting import eventually

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
BUDGETS = [
    budget("acme", "10", tenant="acme"),  # fails open (the default)
    budget("strict", "10", tenant="strict", failureMode="Closed"),
]
STRICT = {"x-budget-tenant": "strict", "x-budget-user": "u1"}


async def metric(wh: RunningWebhook, name: str) -> float:
    for line in (await wh.api("/metrics")).body.decode().splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    await eventually(condition, within=10)


async def test_redis_down_fails_open_or_closed_then_recovers_and_loses_nothing(
    tmp_path: Path,
) -> None:
    with RedisServer() as redis:
        async with start_webhook(
            tmp_path, redis.url, BUDGETS, timeout_ms=100, local_leases=False
        ) as wh:
            assert (await wh.check(CHAT)).status == 200
            port = redis.port
            redis.stop_process()

            opened = await wh.check(CHAT, headers={**AGENT, "x-request-id": "while-down"})
            assert opened.status == 200
            assert opened.headers["x-budget-degraded"] == "ledger-unavailable"
            closed = await wh.check(CHAT, headers=STRICT)
            assert closed.status == 503
            assert closed.error["code"] == "budget_unavailable"
            assert "default/strict" in closed.error["message"]
            # Still ready (a configuration is loaded), so Envoy keeps asking and the
            # budgets' failure modes decide; the outage shows in the details and metrics.
            ready = await wh.api("/readyz")
            assert ready.status == 200
            assert ready.json()["ledger"]["reachable"] is False
            assert any("ledger unreachable" in w for w in ready.json()["warnings"])
            assert await metric(wh, "budget_guard_ledger_up") == 0.0
            assert await metric(wh, "budget_guard_fail_open_total") == 1.0
            accepted = await wh.settle({"request_id": "while-down", "cost_usd": "0.25"})
            assert (accepted.status, accepted.json()["status"]) == (202, "accepted")

            redis.start(port)  # back on the same address; the webhook is not restarted

            async def recovered() -> bool:
                return bool((await wh.api("/readyz")).json()["ledger"]["reachable"])

            await wait_for(recovered)
            assert (await wh.check(CHAT, headers=STRICT)).status == 200

            async def replayed() -> bool:
                budgets = (await wh.api("/v1/budgets")).json()["budgets"]
                acme = next(b for b in budgets if b["name"] == "acme")
                return bool(acme["spentUsd"] == "0.25")

            await wait_for(replayed)  # the degraded request's spend was recorded
            again = await wh.settle({"request_id": "while-down", "cost_usd": "0.25"})
            assert again.json()["status"] == "already_settled"


async def test_a_slow_ledger_is_a_failure_too(tmp_path: Path) -> None:
    with RedisServer() as redis:
        async with start_webhook(
            tmp_path, redis.url, BUDGETS, timeout_ms=50, local_leases=False
        ) as wh:
            assert (await wh.check(CHAT)).status == 200
            redis.pause()  # connections stay open, nothing answers
            try:
                started = asyncio.get_running_loop().time()
                slow = await wh.check(CHAT)
                elapsed = asyncio.get_running_loop().time() - started
                assert slow.status == 200
                assert slow.headers["x-budget-degraded"] == "ledger-unavailable"
                assert (await wh.check(CHAT, headers=STRICT)).status == 503
                assert elapsed < 5  # bounded by --ledger-timeout-ms, not by Redis
                assert await metric(wh, "budget_guard_ledger_errors_total") == 2.0
            finally:
                redis.resume()

            async def reconnected() -> bool:
                return bool((await wh.api("/readyz")).json()["ledger"]["reachable"])

            await wait_for(reconnected)
            normal = await wh.check(CHAT)
            assert normal.status == 200
            assert "x-budget-degraded" not in normal.headers


async def test_a_fail_closed_timeout_releases_what_may_have_landed(tmp_path: Path) -> None:
    with RedisServer() as redis:
        async with start_webhook(
            tmp_path, redis.url, BUDGETS, timeout_ms=50, local_leases=False
        ) as wh:
            redis.pause()
            try:
                refused = await wh.check(CHAT, headers={**STRICT, "x-request-id": "refused"})
                assert refused.status == 503
            finally:
                redis.resume()  # the queued reservation may now run in Redis

            async def released() -> bool:
                budgets = (await wh.api("/v1/budgets")).json()["budgets"]
                strict = next(b for b in budgets if b["name"] == "strict")
                return bool(strict["usedUsd"] == "0.00") and len(wh.parts.ledger.journal) == 0

            await wait_for(released)
