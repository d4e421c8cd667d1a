"""A guarded SDK method: the request read from its keyword arguments, reserved, the
model switched if the guard downgrades it, the provider called, and the response's
usage settled (or its stream wrapped). A call that raises releases its reservation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from budget_guard.client.guard import BudgetGuard, GuardedCall
from budget_guard.client.payloads import plain, usage_of
from budget_guard.client.sdk.streams import AsyncGuardedStream, GuardedStream, StreamTally
from budget_guard.domain.pricing import Usage

# The SDKs' own options: not part of the request's body.
SDK_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


@dataclass(frozen=True)
class Endpoint:
    """What a guarded method needs to know of its SDK."""

    omitted: Callable[[object], bool]  # the SDK's "not given" sentinels
    tally: Callable[[], StreamTally]  # reads the events of its streams
    text_of: Callable[[Any], str]  # the output text of a response (when it has no usage)
    prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda kwargs: kwargs

    def request_of(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The body the SDK sends for ``kwargs``: what the guard estimates."""
        body = {
            name: plain(value)
            for name, value in kwargs.items()
            if name not in SDK_OPTIONS and not self.omitted(value)
        }
        extra = kwargs.get("extra_body")
        if isinstance(extra, Mapping):
            body.update({str(name): plain(value) for name, value in extra.items()})
        return body

    def arguments(self, call: GuardedCall, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """``kwargs`` as the provider gets them: the call's model, the endpoint's additions."""
        return self.prepare({**kwargs, "model": call.model})

    def usage(self, call: GuardedCall, response: Any) -> Usage:
        """The response's usage, else its output counted (and the input as estimated)."""
        try:
            usage = usage_of(response)
        except ValueError:  # a usage this parser cannot read: count instead
            usage = None
        if usage is not None:
            return usage
        tokens = call.guard.backend.tokens
        return Usage(
            tokens.input_tokens(call.request, call.model),
            tokens.output_tokens(self.text_of(response), call.model),
        )


def guard_async(
    guard: BudgetGuard, create: Callable[..., Awaitable[Any]], endpoint: Endpoint
) -> Callable[..., Awaitable[Any]]:
    async def guarded_create(**kwargs: Any) -> Any:
        call = await guard.call(endpoint.request_of(kwargs)).reserve()
        arguments = endpoint.arguments(call, kwargs)
        try:
            response = await create(**arguments)
        except BaseException:
            await call.finish(failed=True)
            raise
        if arguments.get("stream") is True:
            stream: AsyncGuardedStream[Any] = AsyncGuardedStream(response, endpoint.tally(), call)
            guard.remember(stream, call)
            return stream
        await call.settle(endpoint.usage(call, response))
        guard.remember(response, call)
        return response

    return guarded_create


def guard_sync(
    guard: BudgetGuard, create: Callable[..., Any], endpoint: Endpoint
) -> Callable[..., Any]:
    def guarded_create(**kwargs: Any) -> Any:
        call = guard.portal.run(guard.call(endpoint.request_of(kwargs)).reserve())
        arguments = endpoint.arguments(call, kwargs)
        try:
            response = create(**arguments)
        except BaseException:
            guard.portal.run(call.finish(failed=True))
            raise
        if arguments.get("stream") is True:
            stream: GuardedStream[Any] = GuardedStream(response, endpoint.tally(), call)
            guard.remember(stream, call)
            return stream
        guard.portal.run(call.settle(endpoint.usage(call, response)))
        guard.remember(response, call)
        return response

    return guarded_create
