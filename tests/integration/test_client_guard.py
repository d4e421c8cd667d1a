"""BudgetGuard's own contract: the context manager and the decorator, soft-limit
warnings and the model downgrade, BudgetExceeded's fields and reset instant, the
agent-loop stop, the published configuration, and the remote backend."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import openai
import pytest
from redis.asyncio import Redis

from budget_guard.client import (
    BudgetExceeded,
    BudgetGuard,
    DirectBackend,
    RemoteBackend,
    SoftLimitWarning,
)
from budget_guard.domain.pricing import Usage
from budget_guard.localservices import RedisServer
from budget_guard.localservices.fake_provider import FakeProvider, FakeUsage
from budget_guard.store.published_config import PublishedConfigStore
from tests.factories import budget_manifest
from tests.fixtures.client import (
    IDENTITY,
    OPENAI_MODEL,
    cost,
    counter,
    direct_guard,
    openai_usage,
    write_budgets,
)
from tests.fixtures.webhook import USAGE_TOKEN, Clock, start_webhook

pytestmark = pytest.mark.redis

REQUEST = {
    "model": OPENAI_MODEL,
    "messages": [{"role": "user", "content": "What is a cat?"}],
    "max_tokens": 400,
}
USAGE = {"prompt_tokens": 900, "completion_tokens": 120}
CHARGED = cost(OPENAI_MODEL, Usage(input_tokens=900, output_tokens=120))
MANIFESTS = [budget_manifest("acme", "100", tenant="acme")]
# A day that lies ahead, so that counters written on it do not expire during the test.
NOW = dt.datetime(2030, 5, 10, 15, 0, tzinfo=dt.UTC)


async def test_the_context_manager_settles_usage_releases_failures_and_keeps_estimates(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis
) -> None:
    guard = direct_guard(redis_server.url, write_budgets(tmp_path, MANIFESTS))
    try:
        async with guard.call(REQUEST) as call:
            call.record(USAGE)
        assert call.charged_micros == CHARGED
        with pytest.raises(RuntimeError):
            async with guard.call(REQUEST) as failed:
                raise RuntimeError("the provider failed")
        assert failed.charged_micros == 0
        async with guard.call(REQUEST) as unreported:
            pass  # no usage recorded: the estimate stays charged
        assert unreported.charged_micros == unreported.reserved_micros > 0
        spent = (await counter(redis_client, MANIFESTS, "acme", OPENAI_MODEL)).spent
        assert spent == CHARGED + unreported.reserved_micros
    finally:
        await guard.aclose()


async def test_the_decorator_guards_async_and_sync_functions(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis
) -> None:
    guard = direct_guard(redis_server.url, write_budgets(tmp_path, MANIFESTS))

    @guard.guarded
    async def ask(**request: Any) -> dict[str, Any]:
        return {"model": request["model"], "usage": USAGE}

    @guard.guarded
    def ask_sync(**request: Any) -> dict[str, Any]:
        return {"model": request["model"], "usage": USAGE}

    try:
        await ask(**REQUEST)
        await asyncio.to_thread(lambda: ask_sync(**REQUEST))
        spent = (await counter(redis_client, MANIFESTS, "acme", OPENAI_MODEL)).spent
        assert spent == 2 * CHARGED
    finally:
        await guard.aclose()


async def test_soft_limits_warn_and_downgrade_the_model_when_allowed(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis, provider: FakeProvider
) -> None:
    served = cost(OPENAI_MODEL, openai_usage(FakeUsage()))
    manifests = [
        budget_manifest(
            "acme",
            f"0.{served * 3:06d}",
            tenant="acme",
            thresholds=[50],
            onSoftLimit={"degradeModels": {OPENAI_MODEL: "gpt-4o-mini"}},
        )
    ]
    heard: list[SoftLimitWarning] = []
    guard = direct_guard(
        redis_server.url,
        write_budgets(tmp_path, manifests),
        allow_downgrade=True,
        on_warning=heard.append,
    )
    raw = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test")
    client = guard.wrap(raw)
    try:
        first = await client.chat.completions.create(**REQUEST)
        first_call = guard.call_of(first)
        assert first_call is not None and first_call.warnings == [] and not heard
        second = await client.chat.completions.create(**REQUEST)
        call = guard.call_of(second)
        assert call is not None
        (warning,) = call.warnings
        assert heard == [warning]
        assert warning.threshold == 50
        assert warning.suggested_model == "gpt-4o-mini" and warning.downgraded
        assert provider.requests[-1]["model"] == "gpt-4o-mini"
        mini = cost("gpt-4o-mini", openai_usage(FakeUsage()))
        assert call.charged_micros == mini
        spent = (await counter(redis_client, manifests, "acme", OPENAI_MODEL)).spent
        assert spent == served + mini
    finally:
        await raw.close()
        await guard.aclose()


async def test_budget_exceeded_carries_the_429_fields_and_the_reset_instant(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis
) -> None:
    manifests = [
        budget_manifest(
            "acme-daily",
            "0.01",
            tenant="acme",
            period="Daily",
            upgradeURL="https://billing.example.com/upgrade",
        )
    ]
    budgets = write_budgets(tmp_path, manifests)
    guard = direct_guard(redis_server.url, budgets, clock=lambda: NOW)
    try:
        async with guard.call(REQUEST) as call:
            call.record({"prompt_tokens": 4_000, "completion_tokens": 0})  # exactly $0.01
        with pytest.raises(BudgetExceeded) as denied:
            async with guard.call(REQUEST):
                pytest.fail("a call past the limit must not run")
        error = denied.value
        assert error.resets_at == dt.datetime(2030, 5, 11, tzinfo=dt.UTC)
        assert error.retry_after_seconds == 9 * 3600
        assert (error.scope, error.budget, error.period) == (
            "tenant=acme",
            "default/acme-daily",
            "2030-05-10",
        )
        assert (error.limit_usd, error.spent_usd) == ("0.01", "0.01")
        assert error.upgrade_url == "https://billing.example.com/upgrade"
        assert error.message.startswith(
            "Budget exceeded: tenant acme's daily budget 'default/acme-daily' has $0.01 of "
            "$0.01 used this day (2030-05-10)"
        )
        assert "It resets in 9h, at 2030-05-11T00:00:00Z." in error.message
    finally:
        await guard.aclose()


async def runaway_agent(client: Any, guard: BudgetGuard, tools_run: list[str]) -> None:
    """An agent that calls tools for ever; ``guard.step()`` runs before each tool."""
    messages: list[Any] = [{"role": "user", "content": "Find everything about cats."}]
    for _ in range(20):
        response = await client.chat.completions.create(
            **{**REQUEST, "messages": messages}, extra_headers={"x-fake": "tools"}
        )
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        for tool_call in message.tool_calls or ():
            await guard.step()  # is there room for another turn?
            tools_run.append(tool_call.function.name)
            messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": "cats"})


async def test_the_agent_loop_stop_ends_a_loop_of_tool_calls(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis, provider: FakeProvider
) -> None:
    served = cost(OPENAI_MODEL, openai_usage(FakeUsage()))
    limit = served * 3 + served // 2  # room for three calls and half a fourth
    manifests = [budget_manifest("acme", f"0.{limit:06d}", tenant="acme")]
    guard = direct_guard(redis_server.url, write_budgets(tmp_path, manifests))
    raw = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test")
    client = guard.wrap(raw)
    calls_before = len(provider.requests)
    tools_run: list[str] = []
    try:
        with pytest.raises(BudgetExceeded) as stopped:
            await runaway_agent(client, guard, tools_run)
        assert len(provider.requests) - calls_before == 3
        assert len(tools_run) == 2  # the third turn's tool call was stopped
        assert stopped.value.budget == "default/acme"
        spent = (await counter(redis_client, manifests, "acme", OPENAI_MODEL)).spent
        assert spent == 3 * served <= limit
    finally:
        await raw.close()
        await guard.aclose()


async def test_budgets_from_the_configuration_the_operator_publishes(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    await PublishedConfigStore(redis_client).publish(MANIFESTS, [], "2030-05-10T00:00:00Z")
    guard = BudgetGuard(DirectBackend(redis_server.url), **IDENTITY)
    try:
        async with guard.call(REQUEST) as call:
            call.record(USAGE)
        assert (await counter(redis_client, MANIFESTS, "acme", OPENAI_MODEL)).spent == CHARGED
    finally:
        await guard.aclose()


async def test_the_remote_backend_reserves_and_settles_through_the_webhook(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis, provider: FakeProvider
) -> None:
    served = cost(OPENAI_MODEL, openai_usage(FakeUsage()))
    manifests = [budget_manifest("acme", f"0.{served:06d}", tenant="acme", period="Daily")]
    async with start_webhook(tmp_path, redis_server.url, manifests, clock=Clock(NOW)) as wh:
        backend = RemoteBackend(wh.api_url, USAGE_TOKEN)
        guard = BudgetGuard(backend, **IDENTITY)
        raw = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test")
        client = guard.wrap(raw)
        try:
            stream = await client.chat.completions.create(**REQUEST, stream=True)
            async for _ in stream:
                pass
            call = guard.call_of(stream)
            assert call is not None and call.charged_micros == served
            (budget,) = (await wh.api("/v1/budgets")).json()["budgets"]
            assert budget["spentUsd"] == f"0.{served:06d}".rstrip("0")
            with pytest.raises(BudgetExceeded) as denied:
                await client.chat.completions.create(**REQUEST)
            assert denied.value.resets_at == dt.datetime(2030, 5, 11, tzinfo=dt.UTC)
            assert denied.value.spent_micros == served
            with pytest.raises(BudgetExceeded):
                await guard.step()
        finally:
            await raw.close()
            await guard.aclose()
