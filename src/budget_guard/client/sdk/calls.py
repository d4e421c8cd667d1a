"""A guarded SDK method: the request read from its keyword arguments, reserved, the
model switched if the guard downgrades it, the provider called, and the response's
usage settled (or its stream wrapped). A call that raises releases its reservation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from budget_guard.client.backend import Actual
from budget_guard.client.guard import BudgetGuard, GuardedCall
from budget_guard.client.payloads import plain, usage_of
from budget_guard.client.sdk.streams import AsyncGuardedStream, EventReader, GuardedStream
from budget_guard.domain.endpoints import Api

# The SDKs' own options: not part of the request's body.
SDK_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


@dataclass(frozen=True)
class Endpoint:
    """What a guarded method needs to know of its SDK."""

    omitted: Callable[[object], bool]  # the SDK's "not given" sentinels
    api: Api  # the shape of its answers and stream events
    prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda kwargs: kwargs
    # Did ``prepare`` ask a stream for a usage chunk the caller did not ask for?
    added_usage_chunk: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] = (
        lambda before, after: False
    )

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

    def reader(self, kwargs: Mapping[str, Any], arguments: Mapping[str, Any]) -> EventReader:
        return EventReader(self.api, self.added_usage_chunk(kwargs, arguments))

    def actual(self, call: GuardedCall, response: Any) -> Actual:
        """The response's usage; without one it can read, the estimate reserved."""
        try:
            usage = usage_of(response)
        except ValueError:
            usage = None
        return usage if usage is not None else call.reserved_micros


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
            stream: AsyncGuardedStream[Any] = AsyncGuardedStream(
                response, endpoint.reader(kwargs, arguments), call
            )
            guard.remember(stream, call)
            return stream
        await call.settle(endpoint.actual(call, response))
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
            stream: GuardedStream[Any] = GuardedStream(
                response, endpoint.reader(kwargs, arguments), call
            )
            guard.remember(stream, call)
            return stream
        guard.portal.run(call.settle(endpoint.actual(call, response)))
        guard.remember(response, call)
        return response

    return guarded_create
