"""Client benchmark: one SDK call through ``guard.wrap`` against the same call unguarded.

The official ``openai`` SDK (``AsyncOpenAI``) calls the local fake provider
(``budget_guard.localservices.fake_provider``); the guarded client reserves and settles
in a real local redis-server through the direct backend, with four budgets (global,
tenant, feature, per-user template). Calls run one at a time, the kinds alternated,
so that drifts of the machine hit all of them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import yaml
from redis.asyncio import Redis

from bench.stats import Latency, summarize
from bench.webhook import budgets
from budget_guard.client import BudgetGuard, DirectBackend
from budget_guard.localservices.fake_provider import FakeProvider

MODEL = "gpt-4o-mini"
REQUEST = {
    "model": MODEL,
    "max_tokens": 200,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Summarize the week's news about cats in one paragraph."},
    ],
}


@dataclass(frozen=True)
class ClientResults:
    latencies: list[Latency]  # plain, guarded; streamed, guarded


async def _plain(client: Any) -> None:
    await client.chat.completions.create(**REQUEST)


async def _streamed(client: Any) -> None:
    async for _ in await client.chat.completions.create(**REQUEST, stream=True):
        pass


async def _alternated(
    operations: dict[str, Callable[[], Awaitable[None]]], rounds: int
) -> dict[str, list[int]]:
    durations: dict[str, list[int]] = {name: [] for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():
            started = time.perf_counter_ns()
            await operation()
            durations[name].append(time.perf_counter_ns() - started)
    return durations


async def run(redis_url: str, rounds: int = 2000) -> ClientResults:
    await Redis.from_url(redis_url).flushdb()
    with tempfile.TemporaryDirectory() as directory, FakeProvider() as provider:
        budgets_file = Path(directory) / "budgets.yaml"
        budgets_file.write_text(yaml.safe_dump_all(budgets()))
        guard = BudgetGuard(
            DirectBackend(redis_url, budgets=budgets_file),
            tenant="acme",
            user="alice",
            tier="pro",
            feature="chat",
        )
        raw = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="bench", max_retries=0)
        guarded = guard.wrap(raw)
        operations = {
            "plain": lambda: _plain(raw),
            "plain, guarded": lambda: _plain(guarded),
            "streamed": lambda: _streamed(raw),
            "streamed, guarded": lambda: _streamed(guarded),
        }
        await _alternated(operations, 200)  # warm-up: connections, tiktoken, plans
        durations = await _alternated(operations, rounds)
        await raw.close()
        await guard.aclose()
    names = {
        "plain": "chat.completions.create, unguarded (floor)",
        "plain, guarded": "chat.completions.create, guarded",
        "streamed": "the same, streamed, unguarded (floor)",
        "streamed, guarded": "the same, streamed, guarded",
    }
    return ClientResults([summarize(names[key], durations[key], 0.0) for key in operations])
