"""``guard.wrap(Anthropic())`` and ``guard.wrap(AsyncAnthropic())`` (Bedrock and Vertex
clients too): ``messages.create`` guarded, streams included. A stream reports the input
first (``message_start``) and the output last (``message_delta``)."""

from __future__ import annotations

import json
from typing import Any

from anthropic import NotGiven, Omit
from anthropic.resources.messages import AsyncMessages

from budget_guard.client.guard import BudgetGuard
from budget_guard.client.payloads import plain
from budget_guard.client.sdk.calls import Endpoint, guard_async, guard_sync
from budget_guard.client.sdk.proxy import Proxy
from budget_guard.client.sdk.streams import StreamTally
from budget_guard.domain.usage import parse_usage


def _omitted(value: object) -> bool:
    return isinstance(value, (NotGiven, Omit))


class MessagesTally(StreamTally):
    """Message stream events: usage at the start, updated by the final delta."""

    def __init__(self) -> None:
        super().__init__()
        self._reported: dict[str, Any] = {}

    def observe(self, event: Any) -> None:
        kind = event.type
        if kind == "message_start":
            self._report(event.message.usage)
        elif kind == "message_delta":
            self._report(event.usage)
            self.final = True
        elif kind == "content_block_delta":
            delta = event.delta
            for field in ("text", "partial_json", "thinking"):
                self.add_text(getattr(delta, field, None))

    def _report(self, usage: Any) -> None:
        reported = plain(usage)
        if isinstance(reported, dict):  # each report adds the counts known so far
            self._reported.update(reported)
            self.usage = parse_usage(self._reported)


def _text(response: Any) -> str:
    parts: list[str] = []
    for block in response.content:
        kind = block.type
        if kind == "text":
            parts.append(block.text)
        elif kind == "thinking":
            parts.append(block.thinking)
        elif kind == "tool_use":
            parts += [block.name, json.dumps(block.input)]
    return "".join(parts)


MESSAGES = Endpoint(_omitted, MessagesTally, _text)


def wrap(client: Any, guard: BudgetGuard) -> Proxy:
    messages = client.messages
    guarded = guard_async if isinstance(messages, AsyncMessages) else guard_sync
    return Proxy(
        client,
        messages=Proxy(messages, create=guarded(guard, messages.create, MESSAGES)),
        with_options=lambda **options: wrap(client.with_options(**options), guard),
    )
