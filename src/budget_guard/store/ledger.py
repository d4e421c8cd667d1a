"""The atomic ledger: reserve on every applicable budget or none, settle exactly once.

One round trip per decision (``reserve.lua``), one per settlement (``settle.lua``).
Reservations not settled within ``reservation_ttl`` are kept at their estimate (or
released) by ``sweep_expired``; the pending index lives in Redis, so sweeping
survives restarts and any number of processes may sweep at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from budget_guard.domain.decision import BudgetCharge, BudgetState, BudgetVerdict, Decision
from budget_guard.store.keys import KeySchema
from budget_guard.store.scripts import RESERVE, SETTLE

_UNIT_SEPARATOR = "\x1f"
_RESERVED, _DENIED, _ID_TAKEN = 1, 0, 2
_STATE_WIDTH = 5
POOL_RETENTION = dt.timedelta(days=35)  # a burst pool's counter outlives its window, for review


class ExpiredReservations(StrEnum):
    KEEP = "Keep"  # charge the estimate: the call most likely happened
    RELEASE = "Release"  # charge nothing


@dataclass(frozen=True)
class LedgerSettings:
    reservation_ttl: dt.timedelta = dt.timedelta(minutes=15)
    expired_reservations: ExpiredReservations = ExpiredReservations.KEEP
    # How long a settled or expired reservation still answers "already settled".
    record_retention: dt.timedelta = dt.timedelta(hours=24)
    history_retention: dt.timedelta = dt.timedelta(days=400)  # 13 months and change
    event_stream_length: int = 10_000


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who and what a request's spend is reported under, in chargeback."""

    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None

    def field(self) -> str:
        return _UNIT_SEPARATOR.join(
            value or "" for value in (self.tenant, self.feature, self.model, self.user)
        )


class RequestIdTaken(Exception):
    """The request id already has a reservation; the caller picks a fresh id."""


class SettlementStatus(StrEnum):
    SETTLED = "settled"
    ALREADY = "already"  # settled before; nothing changed
    UNKNOWN = "unknown"  # no such reservation (or its record expired)
    NOT_DUE = "not-due"


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    status: SettlementStatus
    reserved_micros: int
    charged_micros: int


@dataclass(frozen=True, slots=True)
class CounterUsage:
    spent: int = 0
    reserved: int = 0
    requests: int = 0
    denied: int = 0
    would_deny: int = 0

    @property
    def used(self) -> int:
        return self.spent + self.reserved


def _ms(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


class Ledger:
    """Spend counters in Redis; one instance per process, shared by all requests."""

    def __init__(
        self,
        client: Redis,
        settings: LedgerSettings | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        self.client = client
        self.settings = settings or LedgerSettings()
        self.keys = keys or KeySchema()

    # -- reserve ---------------------------------------------------------------

    async def reserve(
        self,
        request_id: str,
        charges: Sequence[BudgetCharge],
        cost_micros: int,
        now: dt.datetime,
        attribution: Attribution | None = None,
    ) -> Decision:
        """Reserve ``cost_micros`` on every charge, or on none (denied).

        Raises ``RequestIdTaken`` when the id already has a reservation.
        """
        if cost_micros < 0:
            raise ValueError(f"cost must not be negative, got {cost_micros}")
        keys, args = self._reserve_arguments(request_id, charges, cost_micros, now, attribution)
        answer = await RESERVE.run(self.client, keys, args)
        if answer[0] == _ID_TAKEN:
            raise RequestIdTaken(request_id)
        states = tuple(
            self._state(charge, answer[1 + index * _STATE_WIDTH : 1 + (index + 1) * _STATE_WIDTH])
            for index, charge in enumerate(charges)
        )
        return Decision(request_id, answer[0] == _RESERVED, cost_micros, states)

    def _reserve_arguments(
        self,
        request_id: str,
        charges: Sequence[BudgetCharge],
        cost_micros: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> tuple[list[str], list[Any]]:
        settings = self.settings
        keys = [self.keys.reservation(request_id), self.keys.pending, self.keys.events]
        args: list[Any] = [
            cost_micros,
            _ms(now),
            _ms(now + settings.reservation_ttl),
            int((settings.reservation_ttl + settings.record_retention).total_seconds() * 1000),
            settings.event_stream_length,
            len(charges),
            self._history_lines(charges, now, attribution),
        ]
        pool_keys: list[str] = []
        for charge in charges:
            budget, window, subject = charge.budget, charge.window, charge.subject
            keys.append(self.keys.counter(budget, window, subject))
            args += [
                charge.effective_limit,
                1 if budget.enforces else 0,
                _ms(window.end + (window.end - window.start)),
                ",".join(
                    f"{percent}:{amount}"
                    for percent, amount in zip(
                        budget.thresholds, charge.threshold_amounts, strict=True
                    )
                ),
                budget.id,
                window.key,
                subject or "",
                self.keys.users(budget, window) if subject is not None else "",
                len(charge.pools),
            ]
            for pool in charge.pools:
                pool_keys.append(self.keys.pool(pool, budget))
                cap = pool.max_request_micros
                args += [
                    pool.amount_micros,
                    -1 if cap is None else cap,
                    _ms(pool.valid_until + POOL_RETENTION),
                    pool.id,
                ]
        return keys + pool_keys, args

    def _history_lines(
        self,
        charges: Sequence[BudgetCharge],
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> str:
        lines = []
        for charge in charges:
            budget = charge.budget
            key = self.keys.history(budget, now.astimezone(budget.zone).date())
            lines.append(f"{key}\tspent\trequests")
            if charge.subject is not None:
                lines.append(f"{key}\tu:{charge.subject}\tn:{charge.subject}")
        if attribution is not None:
            key = self.keys.attribution(attribution.tenant, now.astimezone(dt.UTC).date())
            field = attribution.field()
            lines.append(f"{key}\ts{_UNIT_SEPARATOR}{field}\tn{_UNIT_SEPARATOR}{field}")
        return "\n".join(lines)

    @staticmethod
    def _state(charge: BudgetCharge, raw: Sequence[Any]) -> BudgetState:
        used, pool_index, pool_used, crossed, verdict = raw
        crossed_text = _text(crossed)
        return BudgetState(
            charge=charge,
            used=int(used),
            verdict=BudgetVerdict(int(verdict)),
            pool=charge.pools[int(pool_index) - 1] if int(pool_index) else None,
            pool_used=int(pool_used),
            crossed=tuple(int(p) for p in crossed_text.split(",")) if crossed_text else (),
        )

    # -- settle ----------------------------------------------------------------

    async def settle(self, request_id: str, actual_micros: int, now: dt.datetime) -> Settlement:
        """Charge the actual cost of a reserved request, exactly once (idempotent)."""
        if actual_micros < 0:
            raise ValueError(f"actual cost must not be negative, got {actual_micros}")
        return await self._settle(request_id, "usage", actual_micros, now)

    async def _settle(
        self, request_id: str, mode: str, actual_micros: int, now: dt.datetime
    ) -> Settlement:
        answer = await SETTLE.run(
            self.client,
            [self.keys.reservation(request_id), self.keys.pending, self.keys.events],
            self._settle_args(mode, actual_micros, now),
        )
        return Settlement(
            request_id, SettlementStatus(_text(answer[0])), int(answer[1]), int(answer[2])
        )

    def _settle_args(self, mode: str, actual_micros: int, now: dt.datetime) -> list[Any]:
        return [
            mode,
            actual_micros,
            _ms(now),
            int(self.settings.history_retention.total_seconds()),
            self.settings.event_stream_length,
        ]

    async def sweep_expired(self, now: dt.datetime, batch: int = 256) -> int:
        """Settle overdue reservations per ``expired_reservations``; returns how many."""
        due = await self.client.zrangebyscore(self.keys.pending, "-inf", _ms(now), 0, batch)
        if not due:
            return 0
        mode = (
            "expire-keep"
            if self.settings.expired_reservations is ExpiredReservations.KEEP
            else "expire-release"
        )
        await SETTLE.ensure_loaded(self.client)
        async with self.client.pipeline(transaction=False) as pipeline:
            for record in due:
                SETTLE.queue(
                    pipeline,
                    [_text(record), self.keys.pending, self.keys.events],
                    self._settle_args(mode, 0, now),
                )
            answers = await pipeline.execute()
        return sum(1 for answer in answers if _text(answer[0]) == SettlementStatus.SETTLED)

    # -- read ------------------------------------------------------------------

    async def usage(self, charges: Sequence[BudgetCharge]) -> list[CounterUsage]:
        """Current counters of ``charges``, in one pipelined round trip."""
        fields = ("spent", "reserved", "requests", "denied", "would_deny")
        async with self.client.pipeline(transaction=False) as pipeline:
            for charge in charges:
                pipeline.hmget(
                    self.keys.counter(charge.budget, charge.window, charge.subject), fields
                )
            rows = await pipeline.execute()
        return [CounterUsage(*(_int(value) for value in row)) for row in rows]

    async def ping(self) -> bool:
        return bool(await self.client.ping())
