"""The atomic ledger: reserve on every applicable budget or none, settle exactly once.

One round trip per decision (``reserve.lua``), one per settlement (``settle.lua``).
Reservations not settled within ``reservation_ttl`` are kept at their estimate (or
released) by ``sweep_expired``; the pending index lives in Redis, so sweeping
survives restarts and any number of processes may sweep at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from redis.asyncio import Redis

from budget_guard.domain.anomaly import HOURLY_RETENTION
from budget_guard.domain.decision import BudgetCharge, Decision
from budget_guard.domain.instants import unix_ms
from budget_guard.domain.pricing import Usage
from budget_guard.domain.resolution import Attribution
from budget_guard.store.channel import LedgerChannel
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import GLOBAL_TAG, KeySchema
from budget_guard.store.ledger_replies import (
    ID_TAKEN,
    RESERVED,
    LedgerDataLost,
    Settlement,
    SettlementStatus,
    as_text,
    budget_states,
    checked_settlement,
    decode_settlement,
    lease_grants,
    reserve_sending_plan,
)
from budget_guard.store.plans import DetailRetention, EncodedPlan, PlanCache
from budget_guard.store.scripts import COMMIT, FORGET_GRANTS, RELEASE, RESERVE, SETTLE, bulk

__all__ = [
    "ChargeRoom",
    "CounterUsage",
    "ExpiredReservations",
    "Ledger",
    "LedgerDataLost",
    "LedgerSettings",
    "LocalReservation",
    "RequestIdTaken",
    "ReserveRequest",
    "Settlement",
    "SettlementStatus",
]

_FORCED, _NOT_FORCED = bulk("1"), bulk("0")


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
    # What grows with users x days is kept for a window only (docs/reports.md).
    user_detail_retention: dt.timedelta = dt.timedelta(days=35)
    hourly_retention: dt.timedelta = HOURLY_RETENTION
    # The settled-requests stream: at most this many entries, none older than this.
    settled_stream_length: int = 100_000
    settled_stream_age: dt.timedelta = dt.timedelta(days=7)

    @property
    def detail_retention(self) -> DetailRetention:
        return DetailRetention(users=self.user_detail_retention, hourly=self.hourly_retention)

    @property
    def reservation_ttl_ms(self) -> int:
        return int(self.reservation_ttl.total_seconds() * 1000)

    @property
    def record_ttl_ms(self) -> int:
        return int((self.reservation_ttl + self.record_retention).total_seconds() * 1000)


class RequestIdTaken(Exception):
    """The request id already has a reservation; the caller picks a fresh id."""


class LocalReservation(NamedTuple):
    """A request decided in process from leases, waiting to be committed."""

    request_id: str
    plan: EncodedPlan
    cost_micros: int


class ReserveRequest(NamedTuple):
    """``Ledger.reserve_and_lease``'s arguments, checked, for the topology's ``_reserve``."""

    request_id: str
    charges: Sequence[BudgetCharge]
    cost_micros: int
    now: dt.datetime
    attribution: Attribution | None
    force: bool
    wants: Sequence[int]
    returns: Sequence[int]
    returns_marker: str


@dataclass(frozen=True, slots=True)
class CounterUsage:
    used: int = 0  # spent + reserved + leased: what no new reservation can take
    spent: int = 0
    requests: int = 0
    denied: int = 0
    would_deny: int = 0
    leased: int = 0  # granted to processes for local decisions, not yet assigned

    @property
    def assigned(self) -> int:
        """Spent and reserved by requests: usage without open leases."""
        return self.used - self.leased

    @property
    def reserved(self) -> int:
        return self.assigned - self.spent


class ChargeRoom(NamedTuple):
    assigned: int  # spent and reserved by requests on the budget's counter
    room: int  # the most one new request could take: on the counter, or from a pool


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


class Ledger:
    """Spend counters in Redis; one instance per process, shared by all requests.

    Reservations go through ``channel`` when one is given (pipelined with other
    requests' on one connection; see ``store.channel``), else through ``client``."""

    def __init__(
        self,
        client: Redis,
        settings: LedgerSettings | None = None,
        keys: KeySchema | None = None,
        channel: LedgerChannel | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        self._reservations: Redis | LedgerChannel = channel or client
        self.settings = settings or LedgerSettings()
        self.keys = keys or KeySchema()
        self._plans = PlanCache(self.keys, retention=self.settings.detail_retention)
        self._fixed_keys = bulk(self.keys.pending) + bulk(self.keys.events)
        self._fixed_args = bulk(self.settings.record_ttl_ms) + bulk(
            self.settings.event_stream_length
        )

    # -- reserve ---------------------------------------------------------------

    async def reserve(
        self,
        request_id: str,
        charges: Sequence[BudgetCharge],
        cost_micros: int,
        now: dt.datetime,
        attribution: Attribution | None = None,
        *,
        force: bool = False,
    ) -> Decision:
        """Reserve ``cost_micros`` on every charge, or on none (denied).

        ``force`` records a request that was already let through (while the ledger
        was unreachable): it is counted everywhere and denied nowhere.
        Reuse the same ``charges`` tuple for requests with the same budgets (as
        ``ChargePlanner`` does): its encoding is cached by identity.
        Raises ``RequestIdTaken`` when the id already has a reservation.
        """
        decision, _ = await self.reserve_and_lease(
            request_id, charges, cost_micros, now, attribution, force=force
        )
        return decision

    @ledger_call
    async def reserve_and_lease(
        self,
        request_id: str,
        charges: Sequence[BudgetCharge],
        cost_micros: int,
        now: dt.datetime,
        attribution: Attribution | None = None,
        *,
        wants: Sequence[int] = (),
        returns: Sequence[int] = (),
        returns_marker: str = "",
        force: bool = False,
    ) -> tuple[Decision, tuple[int, ...]]:
        """``reserve``, and, when reserved, leases of up to ``wants[i]`` on each charge's
        counter for deciding later requests locally (see ``store.leases``); first gives
        back ``returns[i]`` of lease room held on them, once per ``returns_marker``
        (default: the request id; see ``release``). Returns the decision and the
        leases granted."""
        if cost_micros < 0:
            raise ValueError(f"cost must not be negative, got {cost_micros}")
        marker = returns_marker or request_id
        return await self._reserve(
            ReserveRequest(
                request_id, charges, cost_micros, now, attribution, force, wants, returns, marker
            )
        )

    async def _reserve(self, request: ReserveRequest) -> tuple[Decision, tuple[int, ...]]:
        """The whole request in one reserve.lua call."""
        request_id, charges, cost_micros, now, attribution, force, wants, returns, marker = request
        now_ms = unix_ms(now)
        plan = self._plans.get(charges, now, now_ms, attribution)
        lease_args = (
            bulk(",".join(str(want) for want in wants))
            + bulk(cost_micros)
            + bulk(",".join(str(room) for room in returns))
        )

        def send() -> Awaitable[Any]:
            command = self._reserve_command(
                request_id, cost_micros, now_ms, plan, force, lease_args, marker
            )
            return RESERVE.call(self._reservations, command)

        answer = await reserve_sending_plan(plan, send)
        if answer[0] == ID_TAKEN:
            raise RequestIdTaken(request_id)
        states = budget_states(charges, answer)
        decision = Decision(request_id, answer[0] == RESERVED, cost_micros, states)
        return decision, lease_grants(charges, answer)

    def plan_for(
        self,
        charges: Sequence[BudgetCharge],
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> EncodedPlan:
        return self._plans.get(charges, now, unix_ms(now), attribution)

    def _reserve_command(
        self,
        request_id: str,
        cost: int,
        now_ms: int,
        plan: EncodedPlan,
        force: bool,
        lease_args: bytes,
        returns_marker: str,
    ) -> bytes:
        """reserve.lua's call (see its header for KEYS and ARGV), as RESP bytes."""
        budgets = len(plan.records)
        return RESERVE.command(
            4 + plan.key_count,
            12 + budgets,
            bulk(self.keys.reservation(request_id)),
            self._fixed_keys,
            bulk(self.keys.lease_return(returns_marker)),
            plan.keys_blob,
            bulk(cost),
            bulk(now_ms),
            bulk(now_ms + self.settings.reservation_ttl_ms),
            self._fixed_args,
            bulk(budgets),
            bulk("" if plan.stored else plan.content),
            _FORCED if force else _NOT_FORCED,
            lease_args,
            plan.records_blob,  # the user, then the records
        )

    # -- leases ----------------------------------------------------------------

    @ledger_call
    async def commit(
        self, batch_id: str, batch: Sequence[LocalReservation], now: dt.datetime
    ) -> list[str]:
        """Record requests decided locally from leases, once per ``batch_id`` (retry a
        failed commit with the same id); returns the ids that were taken already
        (recorded under a fresh key, settled at their estimate)."""
        if not batch:
            return []
        return await self._commit_in(GLOBAL_TAG, batch_id, batch, now)

    async def _commit_in(
        self, tag: str, batch_id: str, batch: Sequence[LocalReservation], now: dt.datetime
    ) -> list[str]:
        """``commit`` of a batch whose plans and records all carry hash tag ``tag``."""
        # Per plan first (a batch names few plans), then per counter: this runs on the
        # event loop that decides requests, so it stays at two dict updates per request.
        # A stored plan is shared by users (its key); counters are per encoded plan.
        plans: dict[str, tuple[int, EncodedPlan]] = {}
        per_plan: dict[int, tuple[EncodedPlan, int]] = {}
        request_args: list[str] = []
        keys_ = self.keys
        for item in batch:
            plan = item.plan
            known = plans.get(plan.key)
            if known is None:
                known = plans[plan.key] = (len(plans) + 1, plan)
            _, amount = per_plan.get(id(plan), (plan, 0))
            per_plan[id(plan)] = (plan, amount + item.cost_micros)
            request_args.append(
                f"{item.cost_micros},{known[0]},{len(plan.counter_keys)},{plan.user}"
            )
        assigned: dict[str, int] = {}
        records: dict[str, str] = {}
        for plan, amount in per_plan.values():
            for key, record in zip(plan.counter_keys, plan.records, strict=True):
                assigned[key] = assigned.get(key, 0) + amount
                records[key] = record
        plan_contents = [plan.content for _, plan in plans.values()]
        now_ms = unix_ms(now)
        keys = [keys_.pending_in(tag), keys_.events_in(tag), keys_.commit_marker_in(tag, batch_id)]
        keys += [keys_.reservation_in(tag, item.request_id) for item in batch]
        keys += list(plans) + list(assigned)
        args: list[Any] = [
            now_ms,
            now_ms + self.settings.reservation_ttl_ms,
            self.settings.record_ttl_ms,
            self.settings.event_stream_length,
            len(batch),
            len(plans),
            len(assigned),
            *request_args,
            *plan_contents,
            *(f"{amount}\t{records[key]}" for key, amount in assigned.items()),
        ]
        answer = as_text(await COMMIT.run(self.client, keys, args))
        if answer == "applied":
            return []
        return [batch[int(index) - 1].request_id for index in answer.split(",") if index]

    @ledger_call
    async def release(self, marker: str, unused: Mapping[str, int]) -> bool:
        """Give back the unused part of leases, by counter key, once per ``marker``:
        retry a failed release with the same marker (a reservation's request id is the
        marker of the room it gave back). Returns False when it was applied before."""
        returned = {key: amount for key, amount in unused.items() if amount > 0}
        if not returned:
            return True
        return await self._release_in(GLOBAL_TAG, marker, returned)

    async def _release_in(self, tag: str, marker: str, returned: Mapping[str, int]) -> bool:
        keys = [self.keys.lease_return_in(tag, marker), *returned]
        args = [self.settings.record_ttl_ms, *returned.values()]
        return bool(await RELEASE.run(self.client, keys, args))

    @ledger_call
    async def forget_grants(self, request_id: str, counters: Sequence[str]) -> bool:
        """Give back the leases ``request_id``'s reservation granted on ``counters`` to
        a caller that never read its answer, exactly once. False when there is no such
        reservation (yet: the call that reserves it may still be on its way)."""
        return await self._forget_grants_in(GLOBAL_TAG, request_id)

    async def _forget_grants_in(self, tag: str, request_id: str) -> bool:
        record = self.keys.reservation_in(tag, request_id)
        return int(await FORGET_GRANTS.run(self.client, [record], [])) >= 0

    # -- settle ----------------------------------------------------------------

    @ledger_call
    async def settle(
        self,
        request_id: str,
        actual_micros: int,
        now: dt.datetime,
        usage: Usage | None = None,
        source: str = "api",
    ) -> Settlement:
        """Charge the actual cost of a reserved request, exactly once (idempotent).
        ``usage`` (when reported) and ``source`` (who reported it: api, ext_proc, journal)
        go to the settled-requests stream with it (client: an application settling directly).

        Raises ``LedgerDataLost`` if Redis lost what the reservation referred to.
        """
        if actual_micros < 0:
            raise ValueError(f"actual cost must not be negative, got {actual_micros}")
        args = self._settle_args("usage", actual_micros, now, request_id, usage, source)
        return await self._settle(request_id, args)

    async def _settle(self, request_id: str, args: list[Any]) -> Settlement:
        """The request's one record, settled with settle.lua's ``args``."""
        keys = self._settle_keys(self.keys.reservation(request_id))
        return checked_settlement(request_id, await SETTLE.run(self.client, keys, args))

    def _settle_keys(self, record: str, tag: str = GLOBAL_TAG) -> list[str]:
        """settle.lua's keys; the settled stream is written from ``{global}`` only."""
        keys = [record, self.keys.pending_in(tag), self.keys.events_in(tag)]
        return [*keys, self.keys.settled] if tag == GLOBAL_TAG else keys

    def _settle_args(
        self,
        mode: str,
        actual_micros: int,
        now: dt.datetime,
        request_id: str,
        usage: Usage | None = None,
        source: str = "",
    ) -> list[Any]:
        settings = self.settings
        tokens: tuple[Any, Any] = ("", "")
        if usage is not None:
            read = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
            tokens = (read, usage.output_tokens)
        return [
            mode,
            actual_micros,
            unix_ms(now),
            int(settings.history_retention.total_seconds()),
            settings.event_stream_length,
            request_id,
            *tokens,
            settings.settled_stream_length,
            int(settings.settled_stream_age.total_seconds() * 1000),
            *now.astimezone(dt.UTC).strftime("%Y-%m-%d %H").split(),
            source,
        ]

    @ledger_call
    async def sweep_expired(self, now: dt.datetime, batch: int = 256) -> list[Settlement]:
        """Settle overdue reservations per ``expired_reservations``; returns what it settled."""
        return await self._sweep_in(GLOBAL_TAG, now, batch)

    async def _sweep_in(self, tag: str, now: dt.datetime, batch: int) -> list[Settlement]:
        pending = self.keys.pending_in(tag)
        due = await self.client.zrangebyscore(pending, "-inf", unix_ms(now), 0, batch)
        mode = (
            "expire-keep"
            if self.settings.expired_reservations is ExpiredReservations.KEEP
            else "expire-release"
        )
        swept = []
        for raw in due:
            record = as_text(raw)
            request_id = self.keys.request_id_of(record)
            answer = await SETTLE.run(
                self.client,
                self._settle_keys(record, tag),
                self._settle_args(mode, 0, now, request_id),
            )
            settlement = decode_settlement(request_id, answer)
            if settlement.status is SettlementStatus.SETTLED:
                swept.append(settlement)
            elif settlement.status in (SettlementStatus.UNKNOWN, SettlementStatus.LOST):
                await self.client.zrem(pending, record)  # nothing left to settle
        return swept

    # -- read ------------------------------------------------------------------

    @ledger_call
    async def usage(self, charges: Sequence[BudgetCharge]) -> list[CounterUsage]:
        """Current counters of ``charges``, in one pipelined round trip."""
        fields = ("used", "spent", "requests", "denied", "would_deny", "leased")
        async with self.client.pipeline(transaction=False) as pipeline:
            for charge in charges:
                key = self.keys.counter(charge.budget, charge.window, charge.subject)
                pipeline.hmget(key, fields)
            rows = await pipeline.execute()
        return [CounterUsage(*(_int(value) for value in row)) for row in rows]

    @ledger_call
    async def room(self, charges: Sequence[BudgetCharge]) -> list[ChargeRoom]:
        """What a new request could take on each of ``charges`` now (read only, one
        round trip): the counter's room, or an active burst pool's, as reserve.lua
        judges them."""
        async with self.client.pipeline(transaction=False) as pipeline:
            for charge in charges:
                key = self.keys.counter(charge.budget, charge.window, charge.subject)
                pipeline.hmget(key, ("used", "leased"))
                for pool in charge.pools:
                    pipeline.hget(self.keys.pool(pool, charge.budget), "used")
            replies = iter(await pipeline.execute())
        rooms = []
        for charge in charges:
            used, leased = (_int(value) for value in next(replies))
            best_pool = 0
            for pool in charge.pools:
                pool_room = pool.amount_micros - _int(next(replies))
                if pool.max_request_micros is not None:
                    pool_room = min(pool_room, pool.max_request_micros)
                best_pool = max(best_pool, pool_room)
            room = max(charge.effective_limit - used, best_pool, 0)
            rooms.append(ChargeRoom(assigned=used - leased, room=room))
        return rooms

    @ledger_call
    async def ping(self) -> bool:
        return bool(await self.client.ping())
