"""Guarded streams: every event is read by the gateway's reader of provider answers
(``domain.response_usage.UsageTracker``), and the call is settled once the stream
ends, however it ends: read to its end, closed, left by ``break``, or broken by an
exception. A stream that ends without usage is settled on what it delivered: its text
counted with tiktoken, and the input as estimated (or as the provider reported it when
it did, as Anthropic does first)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from budget_guard.client.guard import GuardedCall
from budget_guard.client.payloads import plain
from budget_guard.domain.endpoints import Api
from budget_guard.domain.pricing import Usage
from budget_guard.domain.response_usage import UsageTracker

T = TypeVar("T")


def _event_data(event: Any) -> dict[str, Any]:
    data = plain(event)
    return data if isinstance(data, dict) else {}


class EventReader:
    """Reads a stream's events for usage; hides from the caller the usage-only chunk of
    an OpenAI chat stream when the guard asked for it and the caller did not."""

    def __init__(self, api: Api, hide_usage_chunk: bool = False) -> None:
        self.tracker = UsageTracker(api)
        self._hide_usage_chunk = hide_usage_chunk

    def passes(self, event: Any) -> bool:
        """Read ``event``; True when the caller is to see it."""
        data = _event_data(event)
        self.tracker.add_event(str(data.get("type", "")), data)
        return not (self._hide_usage_chunk and data.get("usage") and not data.get("choices"))


def settled_usage(tracker: UsageTracker, call: GuardedCall) -> Usage:
    """The provider's usage when it gave all of it; else, for what it did not give, the
    input as estimated and the output counted over the text delivered."""
    if tracker.usage is not None:
        return tracker.usage
    tokens = call.guard.backend.tokens
    estimated = Usage(input_tokens=tokens.input_tokens(call.request, call.model))
    return tracker.settled_usage(estimated, tokens.output_tokens(tracker.text, call.model))


class GuardedStream(Generic[T]):
    """A sync SDK stream (``openai.Stream``, ``anthropic.Stream``), guarded."""

    def __init__(self, inner: Any, reader: EventReader, call: GuardedCall) -> None:
        self._inner = inner
        self._reader = reader
        self.call = call
        self._finished = False
        self._events = self._observe()

    def _observe(self) -> Generator[T, None, None]:
        try:
            for event in self._inner:
                if self._reader.passes(event):
                    yield event
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._inner.close()
        call = self.call
        call.guard.portal.run(call.settle(settled_usage(self._reader.tracker, call)))

    def __iter__(self) -> Iterator[T]:
        try:
            yield from self._events
        finally:
            self._events.close()

    def __next__(self) -> T:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._finish()

    def __enter__(self) -> GuardedStream[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)


class AsyncGuardedStream(Generic[T]):
    """An async SDK stream (``openai.AsyncStream``, ``anthropic.AsyncStream``), guarded.
    Left by ``break``, it is settled when the loop's async generator is finalized."""

    def __init__(self, inner: Any, reader: EventReader, call: GuardedCall) -> None:
        self._inner = inner
        self._reader = reader
        self.call = call
        self._finished = False
        self._events = self._observe()

    async def _observe(self) -> AsyncGenerator[T, None]:
        # The SDK's stream is read through ``__anext__``: ``async for`` would make an async
        # generator of its own, left to the garbage collector when the caller leaves.
        try:
            while True:
                try:
                    event = await self._inner.__anext__()
                except StopAsyncIteration:
                    return
                if self._reader.passes(event):
                    yield event
        finally:
            await self._finish()

    async def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._inner.close()
        await self.call.settle(settled_usage(self._reader.tracker, self.call))

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for event in self._events:
                yield event
        finally:
            await self._events.aclose()

    async def __anext__(self) -> T:
        return await self._events.__anext__()

    async def close(self) -> None:
        await self._events.aclose()
        await self._finish()

    async def __aenter__(self) -> AsyncGuardedStream[T]:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)
