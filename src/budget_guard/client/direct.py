"""The direct backend: the application reserves and settles in the Redis ledger itself,
with the webhook's Lua scripts and compiled budgets, so gateway and application share
one budget to the micro-dollar.

Each call is one atomic round trip to reserve and one to settle (no leases: an
application process holding leases would keep room from the gateway's replicas for
a call that happens a few times a second at most). While Redis cannot be reached,
each budget's ``failureMode`` decides, within its ``failOpenLimit`` per process and
outage; what fails open is not recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from budget_guard.client.backend import Actual, Admission
from budget_guard.client.budgets import CompiledBudgets, FileBudgets, PublishedBudgets
from budget_guard.client.errors import BudgetExceeded, BudgetUnavailable, RequestRefused
from budget_guard.client.loops import PerLoop
from budget_guard.client.payloads import model_of
from budget_guard.client.tokens import TokenCounter
from budget_guard.domain.budget import FailureMode
from budget_guard.domain.decision import (
    BudgetCharge,
    BudgetState,
    BudgetVerdict,
    Decision,
    reserves_worst_case,
)
from budget_guard.domain.denial import denial_for
from budget_guard.domain.failopen import FailOpenAllowance
from budget_guard.domain.instants import utc_now
from budget_guard.domain.pricing import PricedModel, UnknownModelError, Usage
from budget_guard.domain.resolution import Attribution, RequestIdentity
from budget_guard.domain.tokens import TokenizerSet
from budget_guard.loaders.files import load_price_table
from budget_guard.store.connect import redis_client
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.keys import KeySchema
from budget_guard.store.ledger import Ledger, LedgerDataLost, LedgerSettings
from budget_guard.store.sharded import ledger_for

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 1.0


class _Priced(NamedTuple):
    """A request, priced and planned, before its reservation."""

    model: str
    charges: tuple[BudgetCharge, ...]
    cost: int
    now: dt.datetime
    attribution: Attribution


class _NothingKnown:
    """An application process learns nothing of counters between its calls."""

    def known_assigned(self, counter: str) -> int | None:
        return None

    def count_unrecorded(self, counter: str, cost: int) -> None:
        return None


class DirectBackend:
    """Budgets from ``budgets`` (a file or directory of LLMBudget / BurstBudget YAML), or
    without it from the configuration the operator publishes in Redis; prices from the
    shipped table with ``pricing`` merged over it, as the webhook's ``--pricing``."""

    def __init__(
        self,
        redis_url: str,
        *,
        budgets: str | Path | None = None,
        pricing: str | Path | None = None,
        refresh_seconds: float = 10.0,
        clock: Callable[[], dt.datetime] = utc_now,
        keys: KeySchema | None = None,
        ledger_settings: LedgerSettings | None = None,
        tokenizers: TokenizerSet | None = None,
    ) -> None:
        self._keys = keys or KeySchema()
        self._clock = clock
        self._budgets: FileBudgets | PublishedBudgets = (
            FileBudgets(Path(budgets), refresh_seconds)
            if budgets is not None
            else PublishedBudgets(self._keys, refresh_seconds)
        )
        self.prices = load_price_table(Path(pricing) if pricing is not None else None)
        self._tokens = TokenCounter(self.prices, tokenizers)
        settings = ledger_settings or LedgerSettings()
        self._ledgers = PerLoop(
            lambda: ledger_for(  # any topology: redis://, redis+sentinel://, redis+cluster://
                redis_client(
                    redis_url,
                    socket_timeout=SOCKET_TIMEOUT_SECONDS,
                    socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                ),
                settings,
                self._keys,
            )
        )
        self._allowance = FailOpenAllowance(_NothingKnown())
        self._outages = 0
        self._ledger_up = True

    @property
    def tokens(self) -> TokenCounter:
        return self._tokens

    async def reserve(
        self, request_id: str, identity: RequestIdentity, request: Mapping[str, Any]
    ) -> Admission:
        ledger = self._ledgers.get()
        priced = self._price(await self._compiled(ledger), identity, request)
        try:
            decision = await ledger.reserve(
                request_id, priced.charges, priced.cost, priced.now, priced.attribution
            )
        except LedgerUnavailable as error:
            return self._fail_open_or_raise(request_id, priced, error)
        self._ledger_up = True
        if not decision.allowed:
            blocking = decision.blocking
            assert blocking is not None, "a denied decision names its blocking budget"
            raise BudgetExceeded(denial_for(blocking, priced.cost, request_id, priced.now))
        summary = decision.summary(priced.model)
        return Admission(
            request_id=request_id,
            reserved_micros=priced.cost,
            remaining_micros=summary.remaining,
            soft_limit=summary.soft_limit,
            model_override=summary.model_override,
            would_deny=summary.would_deny,
        )

    async def settle(self, admission: Admission, model: str, actual: Actual) -> int | None:
        cost = actual if isinstance(actual, int) else self._cost_of(model, actual, admission)
        if admission.degraded:
            return None
        try:
            usage = None if isinstance(actual, int) else actual
            settlement = await self._ledgers.get().settle(
                admission.request_id, cost, self._clock(), usage, source="client"
            )
        except (LedgerUnavailable, LedgerDataLost) as error:
            log.warning("settlement of %s failed: %s", admission.request_id, error)
            return None
        return settlement.charged_micros

    async def check_room(
        self, identity: RequestIdentity, next_request: Mapping[str, Any] | None
    ) -> None:
        ledger = self._ledgers.get()
        compiled = await self._compiled(ledger)
        if next_request is not None:
            priced = self._price(compiled, identity, next_request)
            charges, cost, now = priced.charges, priced.cost, priced.now
        else:
            now = self._clock()
            charges, cost = compiled.planner.plan(identity, now), 1
        try:
            rooms = await ledger.room(charges)
        except LedgerUnavailable as error:
            raise BudgetUnavailable(f"the budget ledger cannot be reached: {error}") from error
        blocked = tuple(
            BudgetState(charge, room.assigned, BudgetVerdict.DENIES)
            for charge, room in zip(charges, rooms, strict=True)
            if charge.budget.enforces and room.room < cost
        )
        blocking = Decision("", False, cost, blocked).blocking
        if blocking is not None:
            raise BudgetExceeded(denial_for(blocking, cost, "", now))

    async def aclose(self) -> None:
        ledger = self._ledgers.pop()
        if ledger is not None:
            await ledger.client.aclose()

    async def _compiled(self, ledger: Ledger) -> CompiledBudgets:
        try:
            return await self._budgets.current(ledger.client)
        except LedgerUnavailable as error:
            raise BudgetUnavailable(f"the budget ledger cannot be reached: {error}") from error

    def _price(
        self, compiled: CompiledBudgets, identity: RequestIdentity, request: Mapping[str, Any]
    ) -> _Priced:
        model = model_of(request)
        priced = self._priced_model(model)
        scoped = model if priced.by_policy else priced.price.model
        identity = identity._replace(model=scoped)
        now = self._clock()
        charges = compiled.planner.plan(identity, now)
        estimate = self._tokens.estimate(request, priced.price, reserves_worst_case(charges))
        usage = Usage(input_tokens=estimate.input_tokens, output_tokens=estimate.output_tokens)
        attribution = Attribution(identity.tenant, identity.user, identity.feature, scoped)
        return _Priced(model, charges, priced.price.cost_micros(usage), now, attribution)

    def _priced_model(self, model: str) -> PricedModel:
        try:
            return self.prices.price(model)
        except UnknownModelError as error:
            raise RequestRefused(403, "unknown_model", str(error)) from error

    def _cost_of(self, model: str, usage: Usage, admission: Admission) -> int:
        """``usage`` priced; a model with no price (a downgrade to a model the price
        table lacks) keeps the estimate reserved."""
        try:
            return self.prices.price(model).price.cost_micros(usage)
        except UnknownModelError:
            log.warning("%s has no price: %s settled at its estimate", model, admission.request_id)
            return admission.reserved_micros

    def _fail_open_or_raise(
        self, request_id: str, priced: _Priced, error: LedgerUnavailable
    ) -> Admission:
        """Redis failed: each budget's failure mode decides, within its allowance."""
        if self._ledger_up:
            self._ledger_up = False
            self._outages += 1
        closed = _failing_closed(priced.charges)
        if not closed:
            counters = [self._keys.counter(c.budget, c.window, c.subject) for c in priced.charges]
            refused = self._allowance.take(priced.charges, counters, priced.cost, self._outages)
            if refused is not None:
                closed = [refused.budget.id]
        if closed:
            raise BudgetUnavailable(
                f"The budget ledger cannot be reached ({error}) and budget "
                f"{', '.join(closed)} fails closed; retry shortly."
            ) from error
        log.warning("ledger unreachable, %s allowed by failureMode Open: %s", request_id, error)
        return Admission(request_id, priced.cost, None, None, None, (), degraded=True)


def _failing_closed(charges: Sequence[BudgetCharge]) -> list[str]:
    return [c.budget.id for c in charges if c.budget.failure_mode is FailureMode.CLOSED]
