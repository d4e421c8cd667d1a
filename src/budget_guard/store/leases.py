"""Leases: budget reserved ahead in Redis so most decisions need no round trip.

A decision that goes to Redis (``reserve.lua``) also asks, on each of its counters,
for a lease: an amount added to the counter's usage and handed to this process.
Later requests with the same counters are decided in process while every lease
has room: the cost moves from the lease to the request, and a background flush
commits the requests to Redis in batches (``commit.lua``), where they become
reservations like any other (records, pending index, settlement, sweeping).

Why no limit is ever exceeded: a lease is taken atomically from what is left, and
a process decides locally only within its leases. Why leases never starve a shared
budget: a process tops its lease up to a target (some requests' worth, or a small
share of the limit) and never asks for more, and Redis keeps all open leases on a
counter, whoever holds them, within an eighth of what is not yet assigned. So a
SaaS with many one-shot users keeps one modest lease on the tenant's counter, and
a denial leaves at most about one request's cost held in other processes' leases.
Leases shrink as a budget fills and stop altogether below one request's cost, so
the last requests are exact. Unused leases go back when idle, when a period ends,
on a new configuration, and at shutdown; a process that dies keeps its open leases
counted (never less spend).

One instance per process; not thread-safe (it lives on one event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from budget_guard.domain.decision import BudgetCharge, BudgetState, BudgetVerdict, Decision
from budget_guard.domain.resolution import Attribution
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.ledger import Ledger, LocalReservation, RequestIdTaken

log = logging.getLogger(__name__)

_RECENT_IDS = 100_000
_GRANT_LOOKUPS = 3  # release rounds a reservation whose answer was lost is looked for


def _stop_if_cancelled() -> None:
    """A cancellation that a library turned into an error (or lost) still stops a loop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class LeaseSettings:
    enabled: bool = True
    # A lease asks for this many requests' worth, or this share of the limit, whichever
    # is more; Redis caps it at an eighth of what is left.
    requests_per_lease: int = 32
    limit_share: int = 256  # 1/256 of the effective limit
    idle_seconds: float = 10.0  # an unused lease goes back after this long
    # The longest a local decision waits to be committed. Short, so that a batch's
    # encoding (on the deciding event loop) stays a small pause, and little is in
    # process memory only.
    flush_interval_seconds: float = 0.005
    flush_batch: int = 256


@dataclass(slots=True)
class Lease:
    counter: str
    room: int  # granted and not yet used by this process
    base_used: int  # assigned on the counter at the last reply from Redis
    consumed: int = 0  # decided here since that reply
    last_used: float = 0.0


class LocalLeases:
    """``ledger`` decides (its client bounded by the caller's timeout); ``background``
    commits and returns leases (a client with a socket timeout), by default the same."""

    def __init__(
        self,
        ledger: Ledger,
        settings: LeaseSettings | None = None,
        background: Ledger | None = None,
    ) -> None:
        self.ledger = ledger
        self.background = background or ledger
        self.settings = settings or LeaseSettings()
        self._leases: dict[str, Lease] = {}
        self._outbox: list[LocalReservation] = []
        self._inflight: tuple[str, list[LocalReservation]] | None = None
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self._pending_ids: set[str] = set()
        self._wake = asyncio.Event()
        # Lease room on its way back to Redis, and lease room asked for, in
        # reservations in flight, by counter.
        self._returning: dict[str, int] = {}
        self._asking: dict[str, int] = {}
        # Room given back whose answer was lost: (marker, room by counter), returned
        # again under the same marker, so that it goes back exactly once.
        self._unsettled_returns: list[tuple[str, dict[str, int]]] = []
        # Reservations that asked for leases and whose answer was lost (it may have
        # granted some): request id -> (its counters, lookups left), given back by id.
        self._lost_grants: OrderedDict[str, tuple[list[str], int]] = OrderedDict()
        # What Redis last said is assigned on a counter (for the fail-open allowance).
        self._last_seen: dict[str, int] = {}
        self.local_decisions = 0
        self.ledger_decisions = 0

    # -- deciding --------------------------------------------------------------

    async def reserve(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision:
        """Like ``Ledger.reserve``: locally when the leases allow it, else in Redis."""
        local = self.decide_locally(request_id, charges, cost, now, attribution)
        if local is not None:
            return local
        return await self.reserve_remotely(request_id, charges, cost, now, attribution)

    def decide_locally(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision | None:
        """The decision from leases, with no I/O; None when Redis must decide.

        Raises ``RequestIdTaken`` for an id this process reserved recently (a local
        decision cannot see Redis, so reused ids are caught here; across processes,
        at commit)."""
        if request_id in self._recent_ids:
            raise RequestIdTaken(request_id)
        self._recent_ids[request_id] = None
        if len(self._recent_ids) > _RECENT_IDS:
            self._recent_ids.popitem(last=False)
        return self._from_leases(request_id, charges, cost, now, attribution)

    async def reserve_remotely(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision:
        """One round trip to Redis, which also tops up the leases on these counters.

        Denied while this process holds lease room on a denying counter, or is giving
        such room back in another request's reservation (a lease granted to a
        concurrent reservation after this one was sent), it asks once more, with that
        room given back and no new lease: room held here never denies a request of
        this process."""
        self.ledger_decisions += 1
        if not self.settings.enabled or not charges:
            return await self.ledger.reserve(request_id, charges, cost, now, attribution)
        decision = await self._reserve_with_leases(request_id, charges, cost, now, attribution)
        if not decision.allowed and self._room_on_denying(charges, decision):
            decision = await self._reserve_with_leases(
                request_id, charges, cost, now, attribution, retry=True
            )
        return decision

    async def _reserve_with_leases(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
        *,
        retry: bool = False,
    ) -> Decision:
        """One reservation that gives back this process's room on its counters and,
        unless it is the retry after a denial, tops their leases up."""
        returns = self._detach_leases(charges)
        returning = [(lease.counter, lease.room) for lease in returns if lease is not None]
        wants = [] if retry else self._wants(charges, cost)
        counters = self.counters_of(charges)
        marker = f"{request_id}:retry" if retry else request_id  # once per attempt
        asking = [(key, want) for key, want in zip(counters, wants, strict=False) if want]
        _add(self._returning, returning)
        _add(self._asking, asking)
        try:
            decision, grants = await self.ledger.reserve_and_lease(
                request_id,
                charges,
                cost,
                now,
                attribution,
                wants=wants,
                returns=[lease.room if lease else 0 for lease in returns],
                returns_marker=marker,
            )
        except LedgerUnavailable as error:
            if not error.sent:  # the script did not run: the room is still ours
                self._reattach(returns)
            elif returning:  # it may have run: give the room back later, under its marker
                self._unsettled_returns.append((marker, dict(returning)))
            if error.sent and asking:  # it may have granted leases no one will use
                self._grants_lost(request_id, counters)
            raise
        finally:
            _take_away(self._returning, returning)
            _take_away(self._asking, asking)
        self._remember(charges, decision.states)
        if decision.allowed:
            self._take(charges, decision.states, grants)
        return decision

    def counters_of(self, charges: Sequence[BudgetCharge]) -> list[str]:
        """The counter key of each charge, in order."""
        keys = self.ledger.keys
        return [keys.counter(c.budget, c.window, c.subject) for c in charges]

    def _room_on_denying(self, charges: Sequence[BudgetCharge], decision: Decision) -> bool:
        keys = self.ledger.keys
        for charge, state in zip(charges, decision.states, strict=False):
            if state.verdict is BudgetVerdict.DENIES:
                key = keys.counter(charge.budget, charge.window, charge.subject)
                lease = self._leases.get(key)
                if (lease is not None and lease.room > 0) or key in self._returning:
                    return True
        return False

    def _wants(self, charges: Sequence[BudgetCharge], cost: int) -> list[int]:
        """Per counter, what tops its lease up to the target, counting what concurrent
        reservations of this process are asking for already; never more."""
        settings = self.settings
        keys = self.ledger.keys
        wants = []
        for charge in charges:
            target = max(
                cost * settings.requests_per_lease, charge.effective_limit // settings.limit_share
            )
            key = keys.counter(charge.budget, charge.window, charge.subject)
            lease = self._leases.get(key)
            held = (lease.room if lease is not None else 0) + self._asking.get(key, 0)
            wants.append(max(0, target - held))
        return wants

    def _remember(self, charges: Sequence[BudgetCharge], states: Sequence[BudgetState]) -> None:
        if len(self._last_seen) > _RECENT_IDS:
            self._last_seen.clear()
        keys = self.ledger.keys
        for charge, state in zip(charges, states, strict=False):
            key = keys.counter(charge.budget, charge.window, charge.subject)
            self._last_seen[key] = state.used
            lease = self._leases.get(key)
            if lease is not None:
                lease.base_used, lease.consumed = state.used, 0

    def known_assigned(self, counter: str) -> int | None:
        """What is assigned on ``counter`` as far as this process knows, or None."""
        lease = self._leases.get(counter)
        if lease is not None:
            return lease.base_used + lease.consumed
        return self._last_seen.get(counter)

    def count_unrecorded(self, counter: str, cost: int) -> None:
        """Spend let through without the ledger (fail-open), recorded once it is back."""
        self._last_seen[counter] = (self.known_assigned(counter) or 0) + cost

    def _detach_leases(self, charges: Sequence[BudgetCharge]) -> list[Lease | None]:
        """This process's leases on these counters: taken out of use here and given back
        by the same script that reserves (which grants them anew, up to the target), so
        that Redis judges the request on all the room this process holds. Else a request
        sent to Redis for one counter (a user's lease ran out) could be denied on another
        (the tenant's) while this very process holds room there; and a lone process can
        spend the very last cent."""
        keys = self.ledger.keys
        detached: list[Lease | None] = []
        for charge in charges:
            key = keys.counter(charge.budget, charge.window, charge.subject)
            lease = self._leases.get(key)
            if lease is not None and lease.room > 0:
                del self._leases[key]
                detached.append(lease)
            else:
                detached.append(None)
        return detached

    def _reattach(self, leases: Sequence[Lease | None]) -> None:
        for lease in leases:
            if lease is None:
                continue
            current = self._leases.get(lease.counter)
            if current is None:
                self._leases[lease.counter] = lease
            else:
                current.room += lease.room

    def _take(
        self, charges: Sequence[BudgetCharge], states: Sequence[BudgetState], grants: Sequence[int]
    ) -> None:
        keys = self.ledger.keys
        for charge, state, grant in zip(charges, states, grants, strict=False):
            if grant <= 0:
                continue
            key = keys.counter(charge.budget, charge.window, charge.subject)
            lease = self._leases.get(key)
            if lease is None:
                self._leases[key] = Lease(key, grant, state.used, 0, time.monotonic())
            else:
                lease.room += grant

    def _from_leases(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision | None:
        if not self.settings.enabled or not charges or request_id in self._pending_ids:
            return None
        plan = self.ledger.plan_for(charges, now, attribution)
        leases = []
        for key in plan.counter_keys:
            lease = self._leases.get(key)
            if lease is None or lease.room < cost:
                return None
            leases.append(lease)
        moment = time.monotonic()
        states = []
        for charge, lease in zip(charges, leases, strict=True):
            lease.room -= cost
            lease.consumed += cost
            lease.last_used = moment
            states.append(BudgetState(charge=charge, used=lease.base_used + lease.consumed))
        self._outbox.append(LocalReservation(request_id, plan, cost))
        self._pending_ids.add(request_id)
        self.local_decisions += 1
        if len(self._outbox) == 1 or len(self._outbox) >= self.settings.flush_batch:
            self._wake.set()
        return Decision(request_id, True, cost, tuple(states))

    def holds(self, request_id: str) -> bool:
        """Is this request decided here and not yet committed?"""
        return request_id in self._pending_ids

    # -- committing and returning ------------------------------------------------

    async def flush(self, now: dt.datetime | None = None) -> int:
        """Commit every local decision so far; returns how many. Raises on Redis errors
        (the decisions stay queued)."""
        if self._inflight is None:
            if not self._outbox:
                return 0
            batch = self._outbox[: self.settings.flush_batch]
            del self._outbox[: len(batch)]
            self._inflight = (uuid.uuid4().hex, batch)
        batch_id, batch = self._inflight
        taken = await self.background.commit(batch_id, batch, now or dt.datetime.now(dt.UTC))
        self._inflight = None
        for item in batch:
            self._pending_ids.discard(item.request_id)
        for request_id in taken:
            log.error(
                "request id %s was reused: its cost is recorded under a fresh key and kept "
                "at its estimate",
                request_id,
                extra={"request_id": request_id},
            )
        return len(batch)

    async def release_idle(self, *, everything: bool = False) -> int:
        """Give back leases unused for ``idle_seconds`` (or all of them), and any room
        whose return failed before. Raises ``LedgerUnavailable`` when Redis fails: the
        room is then given back at the next call, exactly once."""
        cutoff = time.monotonic() - self.settings.idle_seconds
        idle = [lease for lease in self._leases.values() if everything or lease.last_used < cutoff]
        # Detached before any await, so no decision can use a lease while it goes back.
        for lease in idle:
            del self._leases[lease.counter]
        if idle:
            rooms = {lease.counter: lease.room for lease in idle}
            self._unsettled_returns.append((uuid.uuid4().hex, rooms))
        while self._unsettled_returns:
            marker, rooms = self._unsettled_returns[0]
            await self.background.release(marker, rooms)
            self._unsettled_returns.pop(0)
        await self._forget_lost_grants()
        return len(idle)

    def _grants_lost(self, request_id: str, counters: list[str]) -> None:
        self._lost_grants[request_id] = (counters, _GRANT_LOOKUPS)
        if len(self._lost_grants) > _RECENT_IDS:  # a long outage: the oldest stay counted
            self._lost_grants.popitem(last=False)

    async def _forget_lost_grants(self) -> None:
        """Give back what reservations whose answers were lost may have granted. A
        reservation not found is looked for again at the next rounds (its call may
        still be on its way to Redis), then taken for one that never ran."""
        for request_id, (counters, lookups) in list(self._lost_grants.items()):
            found = await self.background.forget_grants(request_id, counters)
            if found or lookups <= 1:
                del self._lost_grants[request_id]
            else:
                self._lost_grants[request_id] = (counters, lookups - 1)

    async def keep_flushing(self) -> None:
        """Commit local decisions in small batches, soon after they are made."""
        interval = self.settings.flush_interval_seconds
        backoff = interval
        while True:
            _stop_if_cancelled()
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(interval)  # let a batch gather
            try:
                await self._flush_gathered()
                backoff = interval
            except LedgerUnavailable as error:
                log.warning("committing local decisions failed (%s); retrying", error)
                backoff = min(backoff * 2, 1.0)
                await asyncio.sleep(backoff)
                self._wake.set()

    async def _flush_gathered(self) -> None:
        """Commit what gathered, in full batches while there are more. Decisions made
        while a commit is in flight wait for the next interval: committing them at
        once would cost a round trip per decision under light load."""
        while await self.flush() >= self.settings.flush_batch:
            pass

    async def keep_returning_idle(self) -> None:
        while True:
            _stop_if_cancelled()
            await asyncio.sleep(self.settings.idle_seconds / 2)
            with contextlib.suppress(LedgerUnavailable):
                await self.release_idle()

    async def close(self) -> None:
        """Commit everything and give every lease back (at shutdown, on a new config)."""
        while await self.flush():
            pass
        await self.release_idle(everything=True)

    @property
    def open_leases(self) -> int:
        return len(self._leases)

    @property
    def queued(self) -> int:
        return len(self._outbox) + (len(self._inflight[1]) if self._inflight else 0)


def _add(amounts: dict[str, int], items: Sequence[tuple[str, int]]) -> None:
    for key, amount in items:
        amounts[key] = amounts.get(key, 0) + amount


def _take_away(amounts: dict[str, int], items: Sequence[tuple[str, int]]) -> None:
    for key, amount in items:
        left = amounts[key] - amount
        if left:
            amounts[key] = left
        else:
            del amounts[key]
