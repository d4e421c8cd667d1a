"""``guard.wrap(Anthropic())`` and ``guard.wrap(AsyncAnthropic())`` (Bedrock and Vertex
clients too): ``messages.create`` guarded, streams included. A stream reports the input
first (``message_start``) and the output last (``message_delta``)."""

from __future__ import annotations

from typing import Any

from anthropic import NotGiven, Omit
from anthropic.resources.messages import AsyncMessages

from budget_guard.client.guard import BudgetGuard
from budget_guard.client.sdk.calls import Endpoint, guard_async, guard_sync
from budget_guard.client.sdk.proxy import Proxy
from budget_guard.domain.endpoints import Api


def _omitted(value: object) -> bool:
    return isinstance(value, (NotGiven, Omit))


MESSAGES = Endpoint(_omitted, Api.ANTHROPIC)


def wrap(client: Any, guard: BudgetGuard) -> Proxy:
    messages = client.messages
    guarded = guard_async if isinstance(messages, AsyncMessages) else guard_sync
    return Proxy(
        client,
        messages=Proxy(messages, create=guarded(guard, messages.create, MESSAGES)),
        with_options=lambda **options: wrap(client.with_options(**options), guard),
    )
