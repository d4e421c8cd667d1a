"""The real openai and anthropic SDKs, wrapped by the guard and pointed at the fake
provider: the spend recorded equals the usage served, to the micro-dollar, for plain,
streamed, failed, abandoned and broken-off calls, sync and async."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import tiktoken
from redis.asyncio import Redis

from budget_guard.client import BudgetGuard, GuardedCall
from budget_guard.domain.pricing import Usage
from budget_guard.domain.tokens import corrected
from budget_guard.localservices import RedisServer
from budget_guard.localservices.fake_provider import WORDS, FakeProvider, FakeUsage
from tests.factories import budget_manifest
from tests.fixtures.client import (
    ANTHROPIC_MODEL,
    OPENAI_MODEL,
    PRICES,
    anthropic_usage,
    cost,
    counter,
    direct_guard,
    openai_usage,
    write_budgets,
)
from tests.waiting import eventually

pytestmark = pytest.mark.redis

MANIFESTS = [budget_manifest("acme", "100", tenant="acme")]
MESSAGES = [{"role": "user", "content": "Summarize the news about cats in one line."}]
SERVED = FakeUsage()


@dataclass(frozen=True)
class Endpoint:
    name: str
    model: str
    served: Usage  # what the provider reports for a whole call
    arguments: dict[str, Any]
    method: Callable[[Any], Any]  # client -> its create
    text_of: Callable[[Any], str]  # the text one stream event delivers
    provider_reports_input_first: bool  # Anthropic's message_start

    def client(self, base_url: str, sync: bool) -> Any:
        if self.model == ANTHROPIC_MODEL:
            kind: Any = anthropic.Anthropic if sync else anthropic.AsyncAnthropic
            return kind(base_url=base_url, api_key="test", max_retries=0)
        kind = openai.OpenAI if sync else openai.AsyncOpenAI
        return kind(base_url=base_url + "/v1", api_key="test", max_retries=0)


def _chat_text(chunk: Any) -> str:
    return "".join(choice.delta.content or "" for choice in chunk.choices)


def _responses_text(event: Any) -> str:
    return str(event.delta) if event.type == "response.output_text.delta" else ""


def _messages_text(event: Any) -> str:
    return str(event.delta.text) if event.type == "content_block_delta" else ""


ENDPOINTS = [
    Endpoint(
        "chat.completions",
        OPENAI_MODEL,
        openai_usage(SERVED),
        {"model": OPENAI_MODEL, "messages": MESSAGES, "max_tokens": 400},
        lambda client: client.chat.completions.create,
        _chat_text,
        provider_reports_input_first=False,
    ),
    Endpoint(
        "responses",
        OPENAI_MODEL,
        openai_usage(SERVED),
        {"model": OPENAI_MODEL, "input": MESSAGES, "max_output_tokens": 400},
        lambda client: client.responses.create,
        _responses_text,
        provider_reports_input_first=False,
    ),
    Endpoint(
        "messages",
        ANTHROPIC_MODEL,
        anthropic_usage(SERVED),
        {"model": ANTHROPIC_MODEL, "messages": MESSAGES, "max_tokens": 400},
        lambda client: client.messages.create,
        _messages_text,
        provider_reports_input_first=True,
    ),
]
# anthropic's async stream lets the transport's error through unwrapped
ERRORS = (openai.APIError, anthropic.APIError, httpx2.TransportError)
WORDS_BEFORE_LEAVING = 3


def received_cost(endpoint: Endpoint, call: GuardedCall, text: str) -> int:
    """What a stream that ended early costs: its text counted, its input as reported
    (Anthropic) or as estimated."""
    price = PRICES.price(endpoint.model).price
    output = corrected(len(tiktoken.get_encoding("cl100k_base").encode_ordinary(text)), price)
    if endpoint.provider_reports_input_first:
        return cost(endpoint.model, endpoint.served._replace(output_tokens=output))
    estimated = call.guard.backend.tokens.input_tokens(call.request, endpoint.model)
    return cost(endpoint.model, Usage(input_tokens=estimated, output_tokens=output))


class Scenario:
    """One call of ``endpoint`` through a wrapped client, as ``how`` says; returns the
    guarded call (None when it failed) and the text the caller received."""

    def __init__(
        self, guard: BudgetGuard, endpoint: Endpoint, provider: FakeProvider, sync: bool
    ) -> None:
        self.guard, self.endpoint = guard, endpoint
        self.client = endpoint.client(provider.url, sync)
        self.texts: list[str] = []

    async def close(self) -> None:
        closed = self.client.close()
        if asyncio.iscoroutine(closed):
            await closed

    def _arguments(self, how: str) -> dict[str, Any]:
        arguments = dict(self.endpoint.arguments)
        if how != "plain":
            arguments["stream"] = True
        if how in ("fail", "cut"):
            arguments["extra_headers"] = {"x-fake": how}
        return arguments

    def _received(self, event: Any) -> bool:
        """Keep the event's text; True once the caller would leave an abandoned stream."""
        self.texts.append(self.endpoint.text_of(event))
        return sum(1 for text in self.texts if text) == WORDS_BEFORE_LEAVING

    async def _read_async(self, stream: Any, leave_early: bool) -> None:
        async for event in stream:
            if self._received(event) and leave_early:
                break

    def _read_sync(self, stream: Any, leave_early: bool) -> None:
        for event in stream:
            if self._received(event) and leave_early:
                break

    async def run_async(self, how: str) -> tuple[GuardedCall | None, str]:
        create = self.endpoint.method(self.guard.wrap(self.client))
        if how == "fail":
            with pytest.raises(ERRORS):
                await create(**self._arguments(how))
            return None, ""
        result = await create(**self._arguments(how))
        call = self.guard.call_of(result)
        if how == "cut":
            with pytest.raises(ERRORS):
                await self._read_async(result, leave_early=False)
        elif how != "plain":
            await self._read_async(result, leave_early=how == "abandon")
        del result  # the caller lets go of an abandoned stream
        return call, "".join(self.texts)

    def run_sync(self, how: str) -> tuple[GuardedCall | None, str]:
        create = self.endpoint.method(self.guard.wrap(self.client))
        if how == "fail":
            with pytest.raises(ERRORS):
                create(**self._arguments(how))
            return None, ""
        result = create(**self._arguments(how))
        call = self.guard.call_of(result)
        if how == "cut":
            with pytest.raises(ERRORS):
                self._read_sync(result, leave_early=False)
        elif how != "plain":
            self._read_sync(result, leave_early=how == "abandon")
        return call, "".join(self.texts)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("how", ["plain", "stream", "fail", "abandon", "cut"])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
async def test_spend_recorded_equals_usage_served(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Redis,
    provider: FakeProvider,
    endpoint: Endpoint,
    how: str,
    sync: bool,
) -> None:
    guard = direct_guard(redis_server.url, write_budgets(tmp_path, MANIFESTS))
    scenario = Scenario(guard, endpoint, provider, sync)
    try:
        if sync:
            call, text = await asyncio.to_thread(scenario.run_sync, how)
        else:
            call, text = await scenario.run_async(how)
        if call is not None:
            await eventually(lambda: call.settled, what="the call is settled")
        # An abandoned async stream leaves the HTTP library's own async generators to the
        # garbage collector: collected here, on this loop, not in a later test's thread.
        gc.collect()
        await asyncio.sleep(0)
        if how in ("plain", "stream"):
            expected = cost(endpoint.model, endpoint.served)
        elif how == "fail":
            expected = 0
        else:
            assert call is not None
            assert text and text != "".join(WORDS)  # part of the answer, not all of it
            expected = received_cost(endpoint, call, text)
        usage = await counter(redis_client, MANIFESTS, "acme", endpoint.model)
        assert usage.spent == expected
        assert usage.assigned == expected  # nothing left reserved
        if call is not None:
            assert call.charged_micros == expected
    finally:
        await scenario.close()
        await guard.aclose()


async def test_an_openai_chat_stream_asks_for_usage_unless_told_otherwise(
    tmp_path: Path, redis_server: RedisServer, redis_client: Redis, provider: FakeProvider
) -> None:
    guard = direct_guard(redis_server.url, write_budgets(tmp_path, MANIFESTS))
    raw = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test")
    client = guard.wrap(raw)
    arguments: dict[str, Any] = {"model": OPENAI_MODEL, "messages": MESSAGES, "stream": True}
    try:
        chunks = [chunk async for chunk in await client.chat.completions.create(**arguments)]
        assert provider.requests[-1]["stream_options"] == {"include_usage": True}
        assert all(chunk.choices for chunk in chunks)  # the usage chunk it asked for is kept
        # Told not to: no usage arrives, and the output is counted with tiktoken.
        stream = await client.chat.completions.create(
            **arguments, stream_options={"include_usage": False}
        )
        call = guard.call_of(stream)
        assert call is not None
        text = "".join([_chat_text(chunk) async for chunk in stream])
        assert provider.requests[-1]["stream_options"] == {"include_usage": False}
        await eventually(lambda: call.settled)
        assert call.charged_micros == received_cost(ENDPOINTS[0], call, text)
    finally:
        await raw.close()
        await guard.aclose()
