"""``guard.wrap(OpenAI())`` and ``guard.wrap(AsyncOpenAI())``: ``chat.completions.create``
and ``responses.create`` guarded, streams included. A chat stream asks for usage in its
last chunk (``stream_options.include_usage``) unless the caller set that option."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openai import AsyncOpenAI, NotGiven, Omit

from budget_guard.client.guard import BudgetGuard
from budget_guard.client.payloads import usage_of
from budget_guard.client.sdk.calls import Endpoint, guard_async, guard_sync
from budget_guard.client.sdk.proxy import Proxy
from budget_guard.client.sdk.streams import StreamTally

# Output events of a Responses stream that carry no text (base64 audio).
_NOT_TEXT = frozenset({"response.audio.delta"})


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


class ChatTally(StreamTally):
    """Chat completion chunks: text and tool-call deltas, usage in the last chunk."""

    def observe(self, event: Any) -> None:
        if event.usage is not None:
            self.usage = usage_of(event.usage)
            self.final = True
        for choice in event.choices:
            delta = choice.delta
            self.add_text(delta.content)
            self.add_text(getattr(delta, "refusal", None))
            for tool_call in delta.tool_calls or ():
                if tool_call.function is not None:
                    self.add_text(tool_call.function.name)
                    self.add_text(tool_call.function.arguments)


class ResponsesTally(StreamTally):
    """Responses events: text deltas of every kind, usage in the final response."""

    def observe(self, event: Any) -> None:
        kind = event.type
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            if event.response.usage is not None:
                self.usage = usage_of(event.response.usage)
                self.final = True
        elif kind.endswith(".delta") and kind not in _NOT_TEXT:
            self.add_text(getattr(event, "delta", None))


def _chat_text(response: Any) -> str:
    parts: list[str] = []
    for choice in response.choices:
        message = choice.message
        parts += [message.content or "", getattr(message, "refusal", None) or ""]
        for tool_call in message.tool_calls or ():
            function = getattr(tool_call, "function", None)
            if function is not None:
                parts += [function.name, function.arguments]
    return "".join(parts)


def _responses_text(response: Any) -> str:
    return str(response.output_text)


CHAT = Endpoint(_omitted, ChatTally, _chat_text, _with_usage_in_stream)
RESPONSES = Endpoint(_omitted, ResponsesTally, _responses_text)


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
