"""``BudgetGuard``: the budgets of one identity, inside the application.

Every guarded call reserves its estimate before it runs, and settles what it really
used after (``GuardedCall``): as an async or sync context manager, as a decorator, or
through an SDK client wrapped with ``guard.wrap``. A call that raises releases its
reservation. ``guard.step()`` stops an agent loop between steps once the budget is
gone.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from budget_guard.client.backend import Actual, Admission, Backend
from budget_guard.client.loops import Portal
from budget_guard.client.payloads import usage_of
from budget_guard.domain.budget import is_valid_scope_value
from budget_guard.domain.money import format_usd
from budget_guard.domain.request_ids import new_request_id
from budget_guard.domain.resolution import RequestIdentity

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")

# The SDK wrappers, imported only when a client of that SDK is wrapped, so that the
# core never imports an SDK (an import-linter contract).
_SDK_WRAPPERS = {
    "openai": "budget_guard.client.sdk.openai",
    "anthropic": "budget_guard.client.sdk.anthropic",
}


@dataclass(frozen=True)
class SoftLimitWarning:
    """A call was allowed, but a budget it draws on is past a soft threshold (or an
    Observe budget would have denied it)."""

    request_id: str
    threshold: int | None  # the highest soft threshold reached, percent
    remaining_micros: int | None  # the least room left among enforced budgets
    suggested_model: str | None  # a cheaper model the budget suggests
    downgraded: bool  # the call was switched to ``suggested_model``
    would_deny: tuple[str, ...]  # Observe budgets that would have denied it
    message: str


def _warning(admission: Admission, model: str, downgraded: bool) -> SoftLimitWarning | None:
    if admission.soft_limit is None and not admission.would_deny:
        return None
    words = []
    if admission.soft_limit is not None:
        words.append(f"A budget of this call has reached {admission.soft_limit} % of its limit")
        if admission.remaining_micros is not None:
            words[-1] += f" (${format_usd(admission.remaining_micros)} left)"
        words[-1] += "."
    suggested = admission.model_override
    if suggested is not None:
        words.append(
            f"The call uses {suggested} instead of {model}."
            if downgraded
            else f"A cheaper model is suggested: {suggested}."
        )
    if admission.would_deny:
        words.append(f"Observe budgets would deny it: {', '.join(admission.would_deny)}.")
    return SoftLimitWarning(
        request_id=admission.request_id,
        threshold=admission.soft_limit,
        remaining_micros=admission.remaining_micros,
        suggested_model=suggested,
        downgraded=downgraded,
        would_deny=admission.would_deny,
        message=" ".join(words),
    )


class GuardedCall:
    """One call: reserved on entry, settled on exit with the usage recorded (``record``),
    else at its estimate; released (nothing charged) when the block raises first."""

    def __init__(self, guard: BudgetGuard, request: Mapping[str, Any]) -> None:
        self.guard = guard
        self.requested_model = request.get("model")
        self.request: dict[str, Any] = dict(request)  # what to send: the model may change
        self.request_id = new_request_id()
        self.admission: Admission | None = None
        self.warnings: list[SoftLimitWarning] = []
        self.charged_micros: int | None = None  # once settled (None if not recorded)
        self.settled = False
        self._recorded: Actual | None = None

    @property
    def model(self) -> str:
        return str(self.request.get("model", ""))

    @property
    def downgraded(self) -> bool:
        return self.model != self.requested_model

    @property
    def reserved_micros(self) -> int:
        return self.admission.reserved_micros if self.admission is not None else 0

    @property
    def degraded(self) -> bool:
        return self.admission is not None and self.admission.degraded

    def record(self, response_or_usage: object) -> None:
        """The call's usage: a response, a usage object or mapping of any vendor, or a
        ``domain.pricing.Usage``; it is settled when the call ends."""
        usage = usage_of(response_or_usage)
        if usage is not None:
            self._recorded = usage

    async def reserve(self) -> GuardedCall:
        guard = self.guard
        admission = await guard.backend.reserve(self.request_id, guard.identity, self.request)
        self.admission = admission
        override = admission.model_override
        if guard.allow_downgrade and override is not None and override != self.model:
            self.request["model"] = override
        warning = _warning(admission, str(self.requested_model), self.downgraded)
        if warning is not None:
            self.warnings.append(warning)
            if guard.on_warning is not None:
                guard.on_warning(warning)
        guard.last_request = self.request
        return self

    async def settle(self, actual: Actual) -> int | None:
        """Charge ``actual`` (usage, or micro-USD), once; later calls change nothing."""
        if self.settled or self.admission is None:
            return self.charged_micros
        self.settled = True
        self.charged_micros = await self.guard.backend.settle(self.admission, self.model, actual)
        return self.charged_micros

    async def finish(self, failed: bool) -> None:
        """Settle what was recorded; else release a failed call, keep a finished one's
        estimate."""
        if self._recorded is not None:
            await self.settle(self._recorded)
        else:
            await self.settle(0 if failed else self.reserved_micros)

    async def __aenter__(self) -> GuardedCall:
        return await self.reserve()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.finish(failed=error is not None)

    def __enter__(self) -> GuardedCall:
        return self.guard.portal.run(self.reserve())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.guard.portal.run(self.finish(failed=error is not None))


class BudgetGuard:
    """The budgets that apply to one identity (tenant, user, tier, feature), kept by
    ``backend``. ``allow_downgrade`` lets a budget past its first soft threshold switch
    a call to the cheaper model it names; ``on_warning`` hears of every soft limit (for a
    sync call, on the thread of the guard's own event loop)."""

    def __init__(
        self,
        backend: Backend,
        *,
        tenant: str | None = None,
        user: str | None = None,
        tier: str | None = None,
        feature: str | None = None,
        allow_downgrade: bool = False,
        on_warning: Callable[[SoftLimitWarning], None] | None = None,
    ) -> None:
        self.backend = backend
        self.identity = _identity(tenant, user, tier, feature)
        self.allow_downgrade = allow_downgrade
        self.on_warning = on_warning
        self.portal = Portal()
        self.last_request: Mapping[str, Any] | None = None
        self._calls: dict[int, GuardedCall] = {}  # by id() of a live response

    def with_identity(self, **identity: str | None) -> BudgetGuard:
        """A guard for another identity on the same backend (``user="bob"``)."""
        other = copy.copy(self)
        other.identity = self.identity._replace(**identity)
        _identity(*other.identity[:4])  # validate
        other.last_request = None
        other._calls = {}
        return other

    def call(self, request: Mapping[str, Any]) -> GuardedCall:
        """``async with guard.call(request) as call:`` (or ``with``): send
        ``call.request`` and ``call.record(response)``."""
        return GuardedCall(self, request)

    @overload
    def guarded(self, function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...

    @overload
    def guarded(self, function: Callable[P, R]) -> Callable[P, R]: ...

    def guarded(self, function: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function called with the request as keyword arguments (like an
        SDK's ``create``) that returns a response with usage."""
        if inspect.iscoroutinefunction(function):
            return self._guarded_async(function)
        return self._guarded_sync(function)

    def wrap(self, client: C) -> C:
        """An ``openai`` or ``anthropic`` client (sync or async) whose
        ``chat.completions.create``, ``responses.create`` and ``messages.create`` are
        guarded; everything else passes through."""
        sdk = type(client).__module__.split(".")[0]
        if sdk not in _SDK_WRAPPERS:
            raise TypeError(f"guard.wrap knows the openai and anthropic clients, not {client!r}")
        wrapper = importlib.import_module(_SDK_WRAPPERS[sdk])
        return cast(C, wrapper.wrap(client, self))

    async def step(self, next_request: Mapping[str, Any] | None = None) -> None:
        """Between an agent's steps: raise ``BudgetExceeded`` once the next call would not
        fit, judged on ``next_request`` or else on this guard's last call."""
        await self.backend.check_room(self.identity, next_request or self.last_request)

    def step_sync(self, next_request: Mapping[str, Any] | None = None) -> None:
        self.portal.run(self.step(next_request))

    def call_of(self, response: object) -> GuardedCall | None:
        """The guarded call that produced ``response`` (a wrapped SDK's response or stream):
        its warnings, model, reservation and charge."""
        return self._calls.get(id(response))

    def remember(self, response: object, call: GuardedCall) -> None:
        # Keyed by id() (SDK responses are unhashable) for as long as the response lives.
        self._calls[id(response)] = call
        weakref.finalize(response, self._calls.pop, id(response), None)

    async def aclose(self) -> None:
        """Close this event loop's connections (and the sync API's, if it was used)."""
        await self.backend.aclose()
        self.close()

    def close(self) -> None:
        """Close the sync API's connections and its event loop thread."""
        if self.portal.started:
            self.portal.run(self.backend.aclose())
            self.portal.stop()

    def _guarded_async(self, function: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(function)
        async def guarded(*args: Any, **request: Any) -> R:
            async with self.call(request) as call:
                response = await function(*args, **call.request)
                call.record(response)
                return response

        return guarded

    def _guarded_sync(self, function: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(function)
        def guarded(*args: Any, **request: Any) -> R:
            with self.call(request) as call:
                response = function(*args, **call.request)
                call.record(response)
                return response

        return guarded


def _identity(
    tenant: str | None, user: str | None, tier: str | None, feature: str | None
) -> RequestIdentity:
    for name, value in (("tenant", tenant), ("user", user), ("tier", tier), ("feature", feature)):
        if value is not None and not is_valid_scope_value(value):
            raise ValueError(f"{name}: {value!r} is not a valid scope value")
    return RequestIdentity(tenant, user, tier, feature)
