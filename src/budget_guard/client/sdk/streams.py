"""Guarded streams: every event passes through a ``StreamTally``, and the call is settled
once the stream ends, however it ends: read to its end, closed, left by ``break``, or
broken by an exception. A stream that ends without usage is settled on what it
delivered: its text counted with tiktoken, and the input as estimated (or as the
provider reported it when it did, as Anthropic does first)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from budget_guard.client.guard import GuardedCall
from budget_guard.domain.pricing import Usage

T = TypeVar("T")


class StreamTally:
    """What a stream delivered: its text, and the usage it reported (``final`` once the
    provider's last word on usage arrived). Each SDK's events are read by a subclass."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.usage: Usage | None = None
        self.final = False

    def observe(self, event: Any) -> None:
        raise NotImplementedError

    def add_text(self, text: object) -> None:
        if isinstance(text, str) and text:
            self.texts.append(text)

    def actual(self, call: GuardedCall) -> Usage:
        """The usage to settle ``call`` with."""
        if self.final and self.usage is not None:
            return self.usage
        tokens = call.guard.backend.tokens
        output = tokens.output_tokens("".join(self.texts), call.model)
        if self.usage is None:
            return Usage(tokens.input_tokens(call.request, call.model), output)
        return self.usage._replace(output_tokens=max(self.usage.output_tokens, output))


class GuardedStream(Generic[T]):
    """A sync SDK stream (``openai.Stream``, ``anthropic.Stream``), guarded."""

    def __init__(self, inner: Any, tally: StreamTally, call: GuardedCall) -> None:
        self._inner = inner
        self._tally = tally
        self.call = call
        self._finished = False
        self._events = self._observe()

    def _observe(self) -> Generator[T, None, None]:
        try:
            for event in self._inner:
                self._tally.observe(event)
                yield event
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._inner.close()
        call = self.call
        call.guard.portal.run(call.settle(self._tally.actual(call)))

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

    def __init__(self, inner: Any, tally: StreamTally, call: GuardedCall) -> None:
        self._inner = inner
        self._tally = tally
        self.call = call
        self._finished = False
        self._events = self._observe()

    async def _observe(self) -> AsyncGenerator[T, None]:
        try:
            async for event in self._inner:
                self._tally.observe(event)
                yield event
        finally:
            await self._finish()

    async def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._inner.close()
        await self.call.settle(self._tally.actual(self.call))

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
