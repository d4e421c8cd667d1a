"""What reserve.lua and settle.lua answer, decoded (see each script's header).

``Ledger`` calls them once per request on one instance, ``ShardedLedger``
(``store.sharded``) once per hash tag on Redis Cluster: both read the same answers here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from budget_guard.domain.decision import BudgetCharge, BudgetState, BudgetVerdict
from budget_guard.domain.resolution import Attribution
from budget_guard.store.plans import EncodedPlan, parse_attribution_label

__all__ = [
    "DENIED",
    "ID_TAKEN",
    "PLAN_MISSING",
    "RESERVED",
    "LedgerDataLost",
    "Settlement",
    "SettlementStatus",
    "as_text",
    "budget_states",
    "checked_settlement",
    "decode_settlement",
    "lease_grants",
    "reserve_sending_plan",
]

# reserve.lua's first answer
DENIED, RESERVED, ID_TAKEN, PLAN_MISSING = 0, 1, 2, 3


class LedgerDataLost(Exception):
    """A reservation's plan is gone from Redis (a flush or a failover lost data)."""


class SettlementStatus(StrEnum):
    SETTLED = "settled"
    ALREADY = "already"  # settled before; nothing changed
    UNKNOWN = "unknown"  # no such reservation (or its record expired)
    NOT_DUE = "not-due"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    status: SettlementStatus
    reserved_micros: int
    charged_micros: int
    previously_charged_micros: int | None = None  # set when an expiry had charged it before
    attribution: Attribution | None = None

    @property
    def newly_charged_micros(self) -> int:
        """What this settlement added to spend (0 unless ``SETTLED``)."""
        if self.status is not SettlementStatus.SETTLED:
            return 0
        return self.charged_micros - (self.previously_charged_micros or 0)


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def reserve_sending_plan(plan: EncodedPlan, send: Callable[[], Awaitable[Any]]) -> Any:
    """Call reserve.lua through ``send`` (which reads ``plan.stored``), without the plan's
    content when it is believed stored; again with it if reserve.lua says it is missing
    (first use, or Redis lost it)."""
    answer = await send()
    if answer[0] == PLAN_MISSING:
        plan.stored = False
        answer = await send()
    plan.stored = True
    return answer


def budget_states(
    charges: Sequence[BudgetCharge], answer: Sequence[Any]
) -> tuple[BudgetState, ...]:
    """Decode reserve.lua's answer: usage per budget, then details where there are any."""
    details: dict[int, list[str]] = {}
    for raw in answer[2 + len(charges) :]:
        position, pool, pool_used, crossed, verdict = as_text(raw).split(":")
        details[int(position) - 1] = [pool, pool_used, crossed, verdict]
    states = []
    for index, charge in enumerate(charges):
        used = int(answer[1 + index])
        detail = details.get(index)
        if detail is None:
            states.append(BudgetState(charge=charge, used=used))
            continue
        pool, pool_used, crossed, verdict = detail
        states.append(
            BudgetState(
                charge=charge,
                used=used,
                verdict=BudgetVerdict(int(verdict)),
                pool=charge.pools[int(pool) - 1] if int(pool) else None,
                pool_used=int(pool_used),
                crossed=tuple(int(p) for p in crossed.split(",")) if crossed else (),
            )
        )
    return tuple(states)


def lease_grants(charges: Sequence[BudgetCharge], answer: Sequence[Any]) -> tuple[int, ...]:
    """The leases reserve.lua granted, per budget (none when none were wanted)."""
    granted = as_text(answer[1 + len(charges)])
    return tuple(int(grant) for grant in granted.split(",")) if granted else ()


def decode_settlement(request_id: str, answer: Sequence[Any]) -> Settlement:
    status = SettlementStatus(as_text(answer[0]))
    previous: int | None = None
    attribution: Attribution | None = None
    if len(answer) >= 5:
        previous = None if int(answer[3]) < 0 else int(answer[3])
        label = as_text(answer[4])
        if label:
            attribution = parse_attribution_label(label)
    return Settlement(request_id, status, int(answer[1]), int(answer[2]), previous, attribution)


def checked_settlement(request_id: str, answer: Sequence[Any]) -> Settlement:
    """``decode_settlement`` of a settlement asked for by request id: raises
    ``LedgerDataLost`` if Redis lost what the reservation referred to."""
    settlement = decode_settlement(request_id, answer)
    if settlement.status is SettlementStatus.LOST:
        raise LedgerDataLost(f"the reservation of {request_id} refers to data Redis lost")
    return settlement
