"""What a guard asks of where the budgets are kept: ``DirectBackend`` (the Redis ledger)
or ``RemoteBackend`` (the webhook's API)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from budget_guard.client.tokens import TokenCounter
from budget_guard.domain.pricing import Usage
from budget_guard.domain.resolution import RequestIdentity

# What a call is settled with: its usage in tokens, or a cost in micro-USD (0 releases
# the reservation; the reserved amount keeps the estimate).
Actual = Usage | int


class Admission(NamedTuple):
    """An allowed reservation, and what the decision tells the caller."""

    request_id: str
    reserved_micros: int
    remaining_micros: int | None  # the least room left among enforced budgets
    soft_limit: int | None  # the highest soft threshold reached, percent
    model_override: str | None  # a cheaper model a budget past its first threshold suggests
    would_deny: tuple[str, ...]  # Observe budgets that would have denied the call
    degraded: bool = False  # allowed without the ledger (it was unreachable; fail open)


class Backend(Protocol):
    @property
    def tokens(self) -> TokenCounter:
        """Counts what a stream without usage produced."""
        ...

    async def reserve(
        self, request_id: str, identity: RequestIdentity, request: Mapping[str, Any]
    ) -> Admission:
        """Reserve the request's estimate, or raise ``BudgetExceeded``,
        ``BudgetUnavailable`` or ``RequestRefused``."""
        ...

    async def settle(self, admission: Admission, model: str, actual: Actual) -> int | None:
        """Charge the call's actual cost, exactly once; the micro-USD charged, or None
        when it could not be recorded (logged; the reservation then expires at its
        estimate)."""
        ...

    async def check_room(
        self, identity: RequestIdentity, next_request: Mapping[str, Any] | None
    ) -> None:
        """Raise ``BudgetExceeded`` when ``next_request`` (or, without one, a single
        micro-dollar) would not fit now."""
        ...

    async def aclose(self) -> None:
        """Close the connections this event loop holds."""
        ...
