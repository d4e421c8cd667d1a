"""Usage settlement: reported usage turned into charged spend, once per request id,
whoever reports it first (``Source``): the gateway's ext_proc, ``POST /v1/usage``, or
the sweeper at a reservation's deadline."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from budget_guard.domain.money import format_usd
from budget_guard.domain.pricing import UnknownModelError, Usage
from budget_guard.domain.resolution import Attribution
from budget_guard.domain.under_reporting import (
    CountedPrompt,
    is_below_estimate,
    reported_prompt_tokens,
)
from budget_guard.domain.usage import UsageReport, parse_usage_report
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.leases import LocalLeases
from budget_guard.store.ledger import Ledger, LedgerDataLost, Settlement, SettlementStatus
from budget_guard.store.reservations import owners_of
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.api_tokens import Caller
from budget_guard.webhook.counted_prompts import CountedPrompts
from budget_guard.webhook.journal import DegradedJournal
from budget_guard.webhook.metrics import Metrics

log = logging.getLogger(__name__)

MAX_ITEMS = 1000


class Source(StrEnum):
    """Who settled a request (``budget_guard_settlements_total{source}``)."""

    EXT_PROC = "ext_proc"  # the gateway read the provider's answer
    API = "api"  # POST /v1/usage
    SWEEPER = "sweeper"  # nobody did before the settle deadline


class Ownership(StrEnum):
    """Whether the caller of ``POST /v1/usage`` may settle a request (see ``ownership``)."""

    OWN = "own"  # the caller acts for the request's tenant (an admin, for every request)
    FOREIGN = "foreign"  # another tenant's request, or one of no tenant: 403
    UNKNOWN = "unknown"  # no reservation: nothing to settle (404)
    UNREACHABLE = "unreachable"  # the ledger cannot say whose it is: retry (503)


@dataclass(frozen=True)
class ItemResult:
    http_status: int
    body: dict[str, Any]


def _item(status: int, request_id: str, outcome: str, **details: str) -> ItemResult:
    return ItemResult(status, {"request_id": request_id, "status": outcome, **details})


def _unknown(request_id: str) -> ItemResult:
    return _item(
        404,
        request_id,
        "unknown_request_id",
        message=f"no reservation for request id {request_id!r}: use the "
        "x-budget-request-id of the check (unsettled ones expire after the settle "
        "deadline; settled ones are remembered for a day)",
    )


def _unreachable(request_id: str) -> ItemResult:
    return _item(
        503, request_id, "ledger_unavailable", message="the ledger cannot be reached; retry"
    )


class SettlementService:
    def __init__(
        self,
        config: ConfigHolder,
        ledger: Ledger,
        journal: DegradedJournal,
        leases: LocalLeases,
        metrics: Metrics,
        clock: Callable[[], dt.datetime],
        counted: CountedPrompts | None = None,
    ) -> None:
        """``counted``: the decider's prompt counts, to judge reports against."""
        self._config = config
        self._ledger = ledger
        self._journal = journal
        self._leases = leases
        self._metrics = metrics
        self._clock = clock
        self._counted = counted if counted is not None else CountedPrompts()

    def parse(self, document: Any) -> list[UsageReport]:
        """Every item, or a ValueError naming the first bad field (nothing is settled)."""
        if isinstance(document, list):
            if not document or len(document) > MAX_ITEMS:
                raise ValueError(f"body: a list of 1 to {MAX_ITEMS} usage reports")
            return [parse_usage_report(item, f"[{index}]") for index, item in enumerate(document)]
        return [parse_usage_report(document)]

    def price(self, reports: Sequence[UsageReport]) -> list[int]:
        config = self._config.current
        if config is None:
            raise LookupError("no configuration loaded: prices unknown")
        costs = []
        for index, report in enumerate(reports):
            if report.cost_micros is not None:
                costs.append(report.cost_micros)
                continue
            assert report.model is not None
            assert report.usage is not None
            try:
                priced = config.prices.price(report.model)
            except UnknownModelError as error:
                where = f"[{index}].model" if len(reports) > 1 else "model"
                raise ValueError(f"{where}: {error}") from None
            costs.append(priced.price.cost_micros(report.usage))
        return costs

    async def ownerships(self, caller: Caller, request_ids: Sequence[str]) -> list[Ownership]:
        """Whether ``caller`` may settle each request, from the tenant its reservation was
        made for (written once at the reservation and never changed, so reading it before
        the settlement is safe). An admin is not asked about: every request is its own.
        A request not reserved yet is UNKNOWN to a tenant token, never settled blind: its
        reservation may still arrive, as another tenant's."""
        if caller.is_admin:
            return [Ownership.OWN] * len(request_ids)
        waiting = [self._journal.entry(request_id) for request_id in request_ids]
        asked = [rid for rid, entry in zip(request_ids, waiting, strict=True) if entry is None]
        try:
            if any(self._leases.holds(request_id) for request_id in asked):
                await self._leases.flush()  # decided here from a lease, not committed yet
            owners = iter(await owners_of(self._ledger.client, self._ledger.keys, asked))
        except LedgerUnavailable as error:
            log.warning("whose requests these are cannot be read: %s", error)
            owners = None
        found = []
        for entry in waiting:
            if entry is not None:  # let through while the ledger was away
                found.append(self._owned(caller, entry.attribution))
                continue
            owner = next(owners) if owners is not None else None
            if owner is None:
                found.append(Ownership.UNREACHABLE)
            elif not owner.found:
                found.append(Ownership.UNKNOWN)
            else:
                found.append(self._owned(caller, owner.attribution))
        return found

    @staticmethod
    def _owned(caller: Caller, attribution: Attribution | None) -> Ownership:
        tenant = attribution.tenant if attribution is not None else None
        return Ownership.OWN if caller.may_act_for(tenant) else Ownership.FOREIGN

    async def settle_owned(
        self, report: UsageReport, cost: int, ownership: Ownership
    ) -> ItemResult:
        """Settle a report whose ownership was asked (``POST /v1/usage``)."""
        if ownership is Ownership.OWN:
            return await self.settle(report, cost)
        if ownership is Ownership.UNKNOWN:
            result = _unknown(report.request_id)
        else:
            result = _unreachable(report.request_id)
        self._metrics.count_settlement(Source.API.value, result.body["status"])
        return result

    async def settle_call(
        self,
        request_id: str,
        cost: int,
        model: str | None,
        source: Source,
        usage: Usage | None = None,
    ) -> ItemResult:
        """Settle a call priced elsewhere (the gateway's ext_proc)."""
        report = UsageReport(request_id, model, usage=usage, cost_micros=cost)
        return await self.settle(report, cost, source)

    async def settle(
        self, report: UsageReport, cost: int, source: Source = Source.API
    ) -> ItemResult:
        result = await self._settle(report, cost, source)
        self._metrics.count_settlement(source.value, result.body["status"])
        return result

    async def _settle(self, report: UsageReport, cost: int, source: Source) -> ItemResult:
        try:
            if self._leases.holds(report.request_id):
                await self._leases.flush()  # decided here from a lease, not committed yet
            settlement = await self._ledger.settle(
                report.request_id, cost, self._clock(), report.usage, source.value
            )
        except LedgerDataLost as error:
            return _item(409, report.request_id, "lost", message=str(error))
        except LedgerUnavailable as error:
            log.warning("settlement of %s failed: %s", report.request_id, error)
            self._metrics.ledger_errors.labels("settle").inc()
            if await self._journal.settle_later(report.request_id, cost):
                return _item(202, report.request_id, "accepted", charged_usd=format_usd(cost))
            return _unreachable(report.request_id)
        counted = self._counted.take(report.request_id)
        if (
            counted is not None
            and source is Source.API
            and settlement.status is SettlementStatus.SETTLED
        ):
            self._judge(report, cost, counted, settlement)
        return await self._result(report, cost, settlement)

    def _judge(
        self, report: UsageReport, cost: int, counted: CountedPrompt, settlement: Settlement
    ) -> None:
        """Count and log a report far below the prompt the guard counted (the rule is in
        ``domain.under_reporting``); it is settled all the same."""
        config = self._config.current
        if not self._same_model(report.model, counted):
            return  # another model answered (a fallback): its prompt is counted otherwise
        if not is_below_estimate(counted, report.usage, cost):
            return
        attribution = settlement.attribution
        tenant = attribution.tenant if attribution is not None else None
        label = config.labels.tenant(tenant) if config is not None else "other"
        self._metrics.usage_below_estimate.labels(tenant=label).inc()
        reported = (
            f"{reported_prompt_tokens(report.usage)} prompt tokens"
            if report.usage is not None
            else f"{format_usd(cost)} USD"
        )
        log.warning(
            "usage of %s (tenant %s) reported far below its estimate: %s reported, the guard "
            "counted %d prompt tokens (estimate %s USD)",
            report.request_id,
            tenant or "-",
            reported,
            counted.prompt_tokens,
            format_usd(settlement.reserved_micros),
            extra={"request_id": report.request_id, "tenant": tenant or ""},
        )

    def _same_model(self, reported: str | None, counted: CountedPrompt) -> bool:
        """The report names the checked model, or a name priced as it (a dated version)."""
        if reported is None or reported == counted.model:
            return True
        config = self._config.current
        try:
            return config is not None and config.prices.price(reported).price == counted.price
        except UnknownModelError:
            return False

    async def _result(self, report: UsageReport, cost: int, settlement: Settlement) -> ItemResult:
        request_id = report.request_id
        if settlement.status is SettlementStatus.UNKNOWN:
            if await self._journal.settle_later(request_id, cost):
                return _item(202, request_id, "accepted", charged_usd=format_usd(cost))
            return _unknown(request_id)
        if settlement.status is SettlementStatus.ALREADY:
            charged = format_usd(settlement.charged_micros)
            return _item(200, request_id, "already_settled", charged_usd=charged)
        self.record_spend(settlement, report.model)
        return _item(
            200,
            request_id,
            "settled",
            reserved_usd=format_usd(settlement.reserved_micros),
            charged_usd=format_usd(settlement.charged_micros),
        )

    def record_spend(self, settlement: Settlement, model: str | None = None) -> None:
        added = settlement.newly_charged_micros
        config = self._config.current
        if added <= 0 or config is None:
            return
        attribution = settlement.attribution
        labels = config.labels
        self._metrics.spend.labels(
            tenant=labels.tenant(attribution.tenant if attribution else None),
            feature=labels.feature(attribution.feature if attribution else None),
            model=labels.model(model or (attribution.model if attribution else None)),
        ).inc(added / 1_000_000)
