"""``guard.wrap(OpenAI())`` and ``guard.wrap(AsyncOpenAI())``: ``chat.completions.create``
and ``responses.create`` guarded, streams included. A chat stream asks for usage in its
last chunk (``stream_options.include_usage``) unless the caller set that option; that
chunk (it has no choices) is then kept from the caller, as the gateway does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openai import AsyncOpenAI, NotGiven, Omit

from budget_guard.client.guard import BudgetGuard
from budget_guard.client.sdk.calls import Endpoint, guard_async, guard_sync
from budget_guard.client.sdk.proxy import Proxy
from budget_guard.domain.endpoints import Api


def _omitted(value: object) -> bool:
    return isinstance(value, (NotGiven, Omit))


def _with_usage_in_stream(kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("stream") is not True:
        return kwargs
    options = kwargs.get("stream_options")
    if options is None or _omitted(options):
        return {**kwargs, "stream_options": {"include_usage": True}}
    if isinstance(options, Mapping) and "include_usage" not in options:
        return {**kwargs, "stream_options": {**options, "include_usage": True}}
    return kwargs


def _usage_chunk_added(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return after.get("stream_options") is not before.get("stream_options")


CHAT = Endpoint(_omitted, Api.OPENAI, _with_usage_in_stream, _usage_chunk_added)
RESPONSES = Endpoint(_omitted, Api.OPENAI)


def wrap(client: Any, guard: BudgetGuard) -> Proxy:
    guarded = guard_async if isinstance(client, AsyncOpenAI) else guard_sync
    completions = client.chat.completions
    return Proxy(
        client,
        chat=Proxy(
            client.chat,
            completions=Proxy(completions, create=guarded(guard, completions.create, CHAT)),
        ),
        responses=Proxy(
            client.responses,
            create=guarded(guard, client.responses.create, RESPONSES),
        ),
        with_options=lambda **options: wrap(client.with_options(**options), guard),
    )
