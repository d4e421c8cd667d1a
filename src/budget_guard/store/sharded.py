"""The ledger on Redis Cluster: a request in parts, one per hash tag.

A Lua script runs in one slot, and a request can touch two: its tenant's (``{t:acme}``:
the tenant's budgets, its attribution) and ``{global}`` (budgets without a tenant,
the index of tenants by day). So on Cluster a request is reserved as *parts*, one per
hash tag, each a complete reservation of its own in its slot: its counters, its
record (``bg:<tag>:r:<id>``), its plan, its pending index and its event stream, by
the same ``reserve.lua`` that reserves a whole request on one instance. The
``{global}`` part is always there (with no budgets if the request has none there):
it is the request's anchor, whose plan names the other parts, so that settling by
request id finds them.

**No limit is ever exceeded**: each part is reserved atomically in its slot, and a
request is allowed only when every part is. If one part is denied (or its request id
is taken), the parts that were reserved are taken back (``cancel.lua``). Taking back
only lowers usage, so whatever interleaving of requests, no counter ever holds more
than its limit.

**What is weaker than on one primary** (see ``docs/concepts.md``):

- A false denial: between one part's reservation and its taking back, its cost is
  counted, so a concurrent request may be denied for room that is about to come back.
- Threshold events and ``would_deny`` counts of a part taken back are not taken back.
- A process that dies (or loses Redis) between parts leaves a reserved part without
  the others; it is settled by the sweeper of its slot like any unsettled
  reservation (``Keep``: at its estimate, so spend is over-counted, never under).
- Settling is one call per part (anchor first), each exactly once; a settlement that
  fails between parts is completed by the caller's retry (the anchor answers
  "already" and names the parts that are left).

Parts are reserved concurrently (one round trip of latency, on two primaries).
Single-instance Redis and Sentinel do not use this module: ``store.ledger.Ledger``
reserves every request in one script there, as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import TimeoutError as RedisTimeoutError

from budget_guard.domain.decision import BudgetCharge, BudgetState, BudgetVerdict, Decision
from budget_guard.domain.instants import unix_ms
from budget_guard.domain.resolution import Attribution
from budget_guard.store.channel import LedgerChannel
from budget_guard.store.errors import UNAVAILABLE, ledger_call
from budget_guard.store.keys import GLOBAL_TAG, KeySchema, hash_tag, tenant_tag
from budget_guard.store.ledger import (
    Ledger,
    LedgerSettings,
    LocalReservation,
    RequestIdTaken,
    ReserveRequest,
)
from budget_guard.store.ledger_replies import (
    DENIED,
    ID_TAKEN,
    RESERVED,
    Settlement,
    SettlementStatus,
    as_text,
    budget_states,
    checked_settlement,
    decode_settlement,
    lease_grants,
    reserve_sending_plan,
)
from budget_guard.store.plans import EncodedPlan, PlanPart, encode_plan, history_tags
from budget_guard.store.scripts import CANCEL, RESERVE, SETTLE

log = logging.getLogger(__name__)

_DENIAL_RECHECKS = 3
_SHARD_REFRESH_SECONDS = 300.0  # re-register a tag now and then: a failover may lose it


class _PartAnswer:
    """One part's reserve.lua answer, decoded."""

    def __init__(self, part: PlanPart, charges: Sequence[BudgetCharge], answer: Sequence[Any]):
        self.part = part
        self.status = int(answer[0])
        self.states: tuple[BudgetState, ...] = ()
        self.grants: tuple[int, ...] = ()
        if self.status in (DENIED, RESERVED):
            self.states = budget_states(charges, answer)
            self.grants = lease_grants(charges, answer)


class ClusterLink:
    """How the decision path sees Redis Cluster, with the attributes of
    ``store.channel.LedgerChannel`` that the webhook reports (health, counts): there is
    no one pipelined connection on Cluster (redis-py keeps a pool per node and follows
    redirections), so health is judged on the outcome of each reservation."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self.healthy = False
        self.outages = 0
        self.stalls = 0  # timeouts
        self.batches = 0  # round trips
        self.commands = 0
        self._last_error = "not connected yet"

    @property
    def last_error(self) -> str:
        return self._last_error

    def answered(self, round_trips: int) -> None:
        if not self.healthy and self.outages:
            log.warning("ledger available again")
        self.healthy = True
        self.batches += round_trips
        self.commands += round_trips

    def failed(self, error: BaseException) -> None:
        if self.healthy:
            self.outages += 1
            log.warning("ledger unavailable: %s", error)
        if isinstance(error, TimeoutError | RedisTimeoutError):
            self.stalls += 1
        self.healthy = False
        self._last_error = f"{type(error).__name__}: {error}"

    async def start(self) -> bool:
        """Learn the cluster's layout; returns whether it answered."""
        try:
            await self._cluster.initialize()
        except UNAVAILABLE as error:
            self.failed(error)
            return False
        self.answered(1)
        return True

    async def aclose(self) -> None:
        """Nothing of its own to close: the client is closed by its owner."""


class ShardedLedger(Ledger):
    """``Ledger`` for Redis Cluster (see the module's docstring); same interface."""

    def __init__(
        self,
        client: RedisCluster,
        settings: LedgerSettings | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        # The read paths that take ``ledger.client`` (store.usage, store.history,
        # store.published_config) use only what RedisCluster offers too (GET/SET,
        # single-slot pipelines, EVALSHA), so it serves them as it is.
        super().__init__(cast("Redis", client), settings, keys)
        self.cluster = client
        self._registered: dict[str, float] = {}
        self._initialized = False
        self._initializing = asyncio.Lock()
        self.link = ClusterLink(client)

    async def _ready(self) -> None:
        """Learn the cluster's layout once, before any concurrent use: redis-py's asyncio
        RedisCluster, initialised by many first commands at once, drops connections
        from under some of them (seen with redis-py 8.1), and a command whose reply is
        lost that way is sent again: a reservation would then find its own record."""
        if self._initialized:
            return
        async with self._initializing:
            if not self._initialized:
                await self.cluster.initialize()
                self._initialized = True

    # -- plans -------------------------------------------------------------------

    def plan_for(
        self,
        charges: Sequence[BudgetCharge],
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> EncodedPlan:
        plan = super().plan_for(charges, now, attribution)
        if not plan.parts:
            plan.parts = self._split(charges, now, attribution)
        return plan

    def _split(
        self,
        charges: Sequence[BudgetCharge],
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> tuple[PlanPart, ...]:
        retention = self.settings.detail_retention
        positions: dict[str, list[int]] = {}
        for index, charge in enumerate(charges):
            positions.setdefault(tenant_tag(charge.budget.scope.tenant), []).append(index)
        tags = set(positions) | history_tags(charges, self.keys, now, attribution, retention)
        others = sorted(tags - {GLOBAL_TAG})
        parts = []
        for tag in [*others, GLOBAL_TAG]:
            mine = tuple(positions.get(tag, ()))
            linked = ("", "")
            if tag == GLOBAL_TAG and others:
                names = [charges[i].budget.id for t in others for i in positions.get(t, ())]
                linked = (",".join(others), ",".join(names))
            plan = encode_plan(
                [charges[i] for i in mine],
                self.keys,
                now,
                attribution,
                retention,
                tag=tag,
                linked=linked,
            )
            parts.append(PlanPart(tag, mine, plan))
        return tuple(parts)

    async def _register(self, tags: Sequence[str]) -> None:
        """Name the tenant tags that get records, so that sweepers and the operator find
        them; before the first record there (and now and then after)."""
        moment = asyncio.get_running_loop().time()
        new = [
            tag
            for tag in tags
            if tag != GLOBAL_TAG
            and moment - self._registered.get(tag, -1e9) > _SHARD_REFRESH_SECONDS
        ]
        if new:
            await self.cluster.sadd(self.keys.shards, *new)
            for tag in new:
                self._registered[tag] = moment

    async def shard_tags(self) -> list[str]:
        """Every hash tag with records, pending indexes or event streams: ``{global}``
        first."""
        members = await self.cluster.smembers(self.keys.shards)
        return [GLOBAL_TAG, *sorted(as_text(member) for member in members)]

    # -- reserve -----------------------------------------------------------------

    async def _reserve(self, request: ReserveRequest) -> tuple[Decision, tuple[int, ...]]:
        """In parts. A denial is checked before it is answered: if every denying counter
        has room again once the parts of concurrent requests that were taken back are
        gone (one read), the request is tried again, up to ``_DENIAL_RECHECKS`` times.
        This keeps false denials rare under bursts; a denial that stands saw the counter
        full."""
        await self._ready()
        plan = self.plan_for(request.charges, request.now, request.attribution)
        await self._register([part.tag for part in plan.parts])
        decision, grants = await self._attempt(plan, request)
        for _ in range(_DENIAL_RECHECKS):
            if decision.allowed or not await self._room_again(request, decision):
                break
            decision, grants = await self._attempt(plan, request)
        return decision, grants

    async def _room_again(self, request: ReserveRequest, decision: Decision) -> bool:
        denying = [
            charge
            for charge, state in zip(request.charges, decision.states, strict=True)
            if state.verdict is BudgetVerdict.DENIES
        ]
        if not denying:
            return False
        return all(room.room >= request.cost_micros for room in await self.room(denying))

    async def _attempt(
        self, plan: EncodedPlan, request: ReserveRequest
    ) -> tuple[Decision, tuple[int, ...]]:
        request_id, charges = request.request_id, request.charges
        calls = [self._reserve_part(part, request) for part in plan.parts]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, UNAVAILABLE):
                self.link.failed(outcome)
                break
        else:
            self.link.answered(len(outcomes))
        answers = [o for o in outcomes if isinstance(o, _PartAnswer)]
        reserved = [a for a in answers if a.status == RESERVED]
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None or len(reserved) < len(plan.parts):
            await self._cancel(request_id, reserved)
        if failure is not None:
            raise failure
        if any(a.status == ID_TAKEN for a in answers):
            raise RequestIdTaken(request_id)
        states: list[BudgetState | None] = [None] * len(charges)
        grants = [0] * len(charges)
        allowed = len(reserved) == len(plan.parts)
        for answer in answers:
            for index, position in enumerate(answer.part.positions):
                states[position] = answer.states[index]
                if allowed and index < len(answer.grants):
                    grants[position] = answer.grants[index]
        decided = tuple(state for state in states if state is not None)
        decision = Decision(request_id, allowed, request.cost_micros, decided)
        return decision, tuple(grants) if request.wants else ()

    async def _reserve_part(self, part: PlanPart, request: ReserveRequest) -> _PartAnswer:
        request_id, charges, cost, now, _, force, wants, returns, marker = request
        mine = [charges[i] for i in part.positions]
        plan, tag = part.plan, part.tag
        now_ms = unix_ms(now)
        keys = [
            self.keys.reservation_in(tag, request_id),
            self.keys.pending_in(tag),
            self.keys.events_in(tag),
            self.keys.lease_return_in(tag, marker),
            plan.key,
            *plan.counter_keys,
            *plan.pool_keys,
        ]

        def args() -> list[Any]:
            return [
                cost,
                now_ms,
                now_ms + self.settings.reservation_ttl_ms,
                self.settings.record_ttl_ms,
                self.settings.event_stream_length,
                len(mine),
                "" if plan.stored else plan.content,
                "1" if force else "0",
                ",".join(str(wants[i]) for i in part.positions) if wants else "",
                cost,
                ",".join(str(returns[i]) for i in part.positions) if returns else "",
                plan.user,
                *plan.records,
            ]

        answer = await reserve_sending_plan(plan, lambda: RESERVE.run(self.cluster, keys, args()))
        return _PartAnswer(part, mine, answer)

    async def _cancel(self, request_id: str, reserved: Sequence[_PartAnswer]) -> None:
        """Take back the parts that were reserved when another was not."""
        for answer in reserved:
            tag = answer.part.tag
            keys = [self.keys.reservation_in(tag, request_id), self.keys.pending_in(tag)]
            grants = ",".join(str(grant) for grant in answer.grants)
            await CANCEL.run(self.cluster, keys, [grants])

    # -- leases --------------------------------------------------------------------

    @ledger_call
    async def commit(
        self, batch_id: str, batch: Sequence[LocalReservation], now: dt.datetime
    ) -> list[str]:
        """``Ledger.commit``, per hash tag: each request's parts are committed in their
        slots, each once per ``batch_id`` (a retry applies only what is missing)."""
        await self._ready()
        per_tag: dict[str, list[LocalReservation]] = {}
        for item in batch:
            parts = item.plan.parts or self._split(item.plan.charges, now, None)
            for part in parts:
                per_tag.setdefault(part.tag, []).append(
                    LocalReservation(item.request_id, part.plan, item.cost_micros)
                )
        await self._register(list(per_tag))
        taken: list[str] = []
        for tag, items in per_tag.items():
            for request_id in await self._commit_in(tag, batch_id, items, now):
                if request_id not in taken:
                    taken.append(request_id)
        return taken

    @ledger_call
    async def release(self, marker: str, unused: Mapping[str, int]) -> bool:
        await self._ready()
        per_tag: dict[str, dict[str, int]] = {}
        for key, amount in unused.items():
            if amount > 0:
                per_tag.setdefault(hash_tag(key), {})[key] = amount
        applied = [await self._release_in(tag, marker, rooms) for tag, rooms in per_tag.items()]
        return all(applied)

    @ledger_call
    async def forget_grants(self, request_id: str, counters: Sequence[str]) -> bool:
        """``Ledger.forget_grants`` in each slot whose counters may hold its grants."""
        await self._ready()
        tags = sorted({hash_tag(counter) for counter in counters})
        found = [await self._forget_grants_in(tag, request_id) for tag in tags]
        return all(found)

    # -- settle --------------------------------------------------------------------

    async def _settle(self, request_id: str, args: list[Any]) -> Settlement:
        """The ``{global}`` part (the anchor) first, which names the others, then each of
        them; every part exactly once."""
        await self._ready()
        record = self.keys.reservation_in(GLOBAL_TAG, request_id)
        answer = await SETTLE.run(self.cluster, self._settle_keys(record), [*args, "1"])
        settlement = checked_settlement(request_id, answer)
        others = as_text(answer[5]) if len(answer) > 5 else ""
        for tag in filter(None, others.split(",")):
            record = self.keys.reservation_in(tag, request_id)
            part = decode_settlement(
                request_id, await SETTLE.run(self.cluster, self._settle_keys(record, tag), args)
            )
            if part.status is SettlementStatus.SETTLED and settlement.status is not part.status:
                settlement = part  # completes a settlement that failed between parts
            if settlement.attribution is None and part.attribution is not None:
                settlement = replace(settlement, attribution=part.attribution)  # the tenant's
            elif part.status in (SettlementStatus.LOST, SettlementStatus.UNKNOWN):
                log.error("settling %s: its part in %s is %s", request_id, tag, part.status.value)
        return settlement

    @ledger_call
    async def sweep_expired(self, now: dt.datetime, batch: int = 256) -> list[Settlement]:
        """``Ledger.sweep_expired`` in every hash tag's slot; returns the requests it
        settled, once each (their ``{global}`` parts)."""
        await self._ready()
        tags = await self.shard_tags()
        swept = await self._sweep_in(GLOBAL_TAG, now, batch)
        for tag in tags[1:]:
            await self._sweep_in(tag, now, batch)
        return swept


def ledger_for(
    client: Redis | RedisCluster,
    settings: LedgerSettings | None = None,
    keys: KeySchema | None = None,
    channel: LedgerChannel | None = None,
) -> Ledger:
    """The ledger for ``client``'s topology: ``ShardedLedger`` on Redis Cluster (where
    there is no one connection to pipeline on: ``channel`` must be None), else
    ``Ledger``."""
    if isinstance(client, RedisCluster):
        if channel is not None:
            raise ValueError("a Redis Cluster ledger has no single pipelined channel")
        return ShardedLedger(client, settings, keys)
    return Ledger(client, settings, keys, channel)
