"""A denial in words and fields: which budget, how much of it is used, when it resets.

One place for the wording: the webhook's 429 body (``webhook.responses``) and the
client's ``BudgetExceeded`` are both a ``Denial``, so an application that calls the
provider directly reads the same sentence and fields as one behind the gateway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from budget_guard.domain.budget import Budget
from budget_guard.domain.decision import BudgetState
from budget_guard.domain.instants import rfc3339
from budget_guard.domain.money import InvalidAmount, format_usd, parse_usd
from budget_guard.domain.periods import Period

BUDGET_EXCEEDED = "budget_exceeded"

_PERIOD_NOUN = {
    Period.DAILY: "day",
    Period.WEEKLY: "week",
    Period.MONTHLY: "month",
    Period.QUARTERLY: "quarter",
    Period.YEARLY: "year",
}


def humanize(seconds: int) -> str:
    """3h 12m, 2d 4h, 12m 5s, 45s: the two largest units that matter."""
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def whose(budget: Budget, subject: str | None) -> str:
    scope = budget.scope
    if scope.user is not None:
        owner = f"user {subject if scope.is_user_template else scope.user}'s"
        return f"{owner} {scope.tier} tier" if scope.tier else owner
    for name in ("tenant", "feature", "model", "tier"):
        value = getattr(scope, name)
        if value:
            return f"{name} {value}'s"
    return "the global"


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request does not fit: the fields of the 429 body, money in micro-USD."""

    message: str
    scope: str
    budget: str
    period: str
    limit_micros: int
    spent_micros: int
    requested_micros: int
    resets_at: dt.datetime
    retry_after_seconds: int
    upgrade_url: str | None
    request_id: str

    def body(self) -> dict[str, Any]:
        """The ``error`` object of the 429 answer."""
        return {
            "type": BUDGET_EXCEEDED,
            "code": BUDGET_EXCEEDED,
            "message": self.message,
            "scope": self.scope,
            "budget": self.budget,
            "period": self.period,
            "limit_usd": format_usd(self.limit_micros),
            "spent_usd": format_usd(self.spent_micros),
            "requested_usd": format_usd(self.requested_micros),
            "resets_at": rfc3339(self.resets_at),
            "retry_after_seconds": self.retry_after_seconds,
            "upgrade_url": self.upgrade_url,
            "request_id": self.request_id,
        }

    @classmethod
    def from_body(cls, error: Mapping[str, Any]) -> Denial:
        """The ``error`` object of a 429 answer read back; a ValueError names the field."""
        try:
            return cls(
                message=str(error["message"]),
                scope=str(error["scope"]),
                budget=str(error["budget"]),
                period=str(error["period"]),
                limit_micros=parse_usd(str(error["limit_usd"]), "limit_usd", allow_zero=True),
                spent_micros=parse_usd(str(error["spent_usd"]), "spent_usd", allow_zero=True),
                requested_micros=parse_usd(
                    str(error["requested_usd"]), "requested_usd", allow_zero=True
                ),
                resets_at=dt.datetime.fromisoformat(str(error["resets_at"])),
                retry_after_seconds=int(error["retry_after_seconds"]),
                upgrade_url=error.get("upgrade_url"),
                request_id=str(error["request_id"]),
            )
        except KeyError as missing:
            raise ValueError(f"error.{missing.args[0]}: is required in a 429 body") from None
        except InvalidAmount as error_:
            raise ValueError(f"error.{error_}") from None


def denial_for(state: BudgetState, cost: int, request_id: str, now: dt.datetime) -> Denial:
    """The denial of a request of ``cost`` by the budget in ``state`` (the blocking one)."""
    charge = state.charge
    budget, window = charge.budget, charge.window
    retry_after = max(1, window.seconds_until_end(now))
    resets_at = rfc3339(window.end)
    message = (
        f"Budget exceeded: {whose(budget, charge.subject)} {budget.period.value.lower()} "
        f"budget '{budget.id}' has ${format_usd(state.used)} of "
        f"${format_usd(charge.effective_limit)} used this {_PERIOD_NOUN[budget.period]} "
        f"({window.key}), and this request needs about ${format_usd(cost)}. It resets in "
        f"{humanize(retry_after)}, at {resets_at}."
    )
    over = state.used - charge.effective_limit
    if over > 0:
        message += (
            f" Calls allowed earlier cost ${format_usd(over)} more than their estimates "
            "when settled, past the limit (reservation: Estimate; WorstCase prevents it)."
        )
    if budget.upgrade_url:
        message += f" To raise the limit: {budget.upgrade_url}"
    return Denial(
        message=message,
        scope=budget.scope.describe(charge.subject),
        budget=budget.id,
        period=window.key,
        limit_micros=charge.effective_limit,
        spent_micros=state.used,
        requested_micros=cost,
        resets_at=window.end,
        retry_after_seconds=retry_after,
        upgrade_url=budget.upgrade_url,
        request_id=request_id,
    )
