"""One budget, two paths: requests checked at the gateway (the webhook) and calls guarded
inside the application (the client's direct backend) race for the same room, and the
budget never ends a micro-dollar over its limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from budget_guard.client import BudgetExceeded, BudgetGuard, DirectBackend
from budget_guard.client.tokens import TokenCounter
from budget_guard.domain.pricing import Usage
from budget_guard.localservices import RedisServer
from tests.factories import budget_manifest
from tests.fixtures.client import IDENTITY, OPENAI_MODEL, PRICES, counter
from tests.fixtures.webhook import RunningWebhook, start_webhook

pytestmark = pytest.mark.redis

REQUEST = {
    "model": OPENAI_MODEL,
    "messages": [{"role": "user", "content": "Plan the week."}],
    "max_tokens": 300,
}
HEADERS = {
    "x-budget-tenant": IDENTITY["tenant"],
    "x-budget-user": IDENTITY["user"],
    "x-budget-tier": IDENTITY["tier"],
    "x-budget-feature": IDENTITY["feature"],
}
ROOM_FOR, EACH_SIDE = 25, 40  # requests the budget holds; requests sent on each path


def estimate() -> int:
    """What both paths reserve for REQUEST: the same estimator, the same price."""
    price = PRICES.price(OPENAI_MODEL).price
    tokens = TokenCounter(PRICES).estimate(REQUEST, price)
    return price.cost_micros(Usage(tokens.input_tokens, tokens.output_tokens))


async def through_the_gateway(webhook: RunningWebhook) -> int:
    answer = await webhook.check(REQUEST, headers=HEADERS)
    if answer.status != 200:
        assert answer.error["code"] == "budget_exceeded"
        return 0
    reserved = answer.headers["x-budget-estimated-cost-usd"]
    request_id = answer.headers["x-budget-request-id"]
    settled = await webhook.settle({"request_id": request_id, "cost_usd": reserved})
    assert settled.status == 200
    return 1


async def in_the_application(guard: BudgetGuard) -> int:
    try:
        async with guard.call(REQUEST):
            pass  # settled at its estimate
    except BudgetExceeded:
        return 0
    return 1


@pytest.mark.parametrize("leases", [False, True], ids=["ledger", "leases"])
async def test_gateway_and_application_share_one_budget_without_overspending(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis, leases: bool
) -> None:
    each = estimate()
    manifests = [budget_manifest("acme", f"0.{each * ROOM_FOR:06d}", tenant="acme")]
    async with start_webhook(tmp_path, redis_server.url, manifests, local_leases=leases) as webhook:
        backend = DirectBackend(redis_server.url, budgets=tmp_path / "budgets")
        guard = BudgetGuard(backend, **IDENTITY)
        await guard.step(REQUEST)  # warm: tiktoken loaded, budgets compiled, Redis connected
        try:
            allowed = await asyncio.gather(
                *(through_the_gateway(webhook) for _ in range(EACH_SIDE)),
                *(in_the_application(guard) for _ in range(EACH_SIDE)),
            )
        finally:
            await guard.aclose()
        await webhook.parts.ledger.leases.close()  # commit what leases decided
        usage = await counter(redis_client, manifests, "acme", OPENAI_MODEL)
    assert usage.spent == sum(allowed) * each <= ROOM_FOR * each
    assert sum(allowed[:EACH_SIDE]) > 0 and sum(allowed[EACH_SIDE:]) > 0  # both paths spent
    if not leases:  # every decision in Redis: the budget fills exactly
        assert sum(allowed) == ROOM_FOR
