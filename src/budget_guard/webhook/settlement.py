"""Usage settlement: reported usage turned into charged spend, once per request id,
whoever reports it first (``Source``): the gateway's ext_proc, ``POST /v1/usage``, or
the sweeper at a reservation's deadline."""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from budget_guard.domain.money import format_usd
from budget_guard.domain.pricing import UnknownModelError, Usage
from budget_guard.domain.usage import UsageReport, parse_usage_report
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.leases import LocalLeases
from budget_guard.store.ledger import Ledger, LedgerDataLost, Settlement, SettlementStatus
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.journal import DegradedJournal
from budget_guard.webhook.metrics import Metrics

log = logging.getLogger(__name__)

MAX_ITEMS = 1000


class Source(StrEnum):
    """Who settled a request (``budget_guard_settlements_total{source}``)."""

    EXT_PROC = "ext_proc"  # the gateway read the provider's answer
    API = "api"  # POST /v1/usage
    SWEEPER = "sweeper"  # nobody did before the settle deadline


class UsageTokens:
    """The bearer token settlement requires, re-read when its file changes (rotation)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: float | None = None
        self._token: bytes | None = None

    def _current(self) -> bytes | None:
        if self._path is None:
            return None
        try:
            stamp = self._path.stat().st_mtime
            if stamp != self._stamp:
                self._token = self._path.read_bytes().strip() or None
                self._stamp = stamp
        except OSError as error:
            log.error("usage token file %s unreadable: %s", self._path, error)
            return None
        return self._token

    def problem(self, authorization: str) -> str | None:
        """None when ``authorization`` carries the token; else what is wrong with it."""
        expected = self._current()
        if expected is None:
            return "usage settlement is disabled: the webhook has no --usage-token-file"
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "send Authorization: Bearer <usage token>"
        if not hmac.compare_digest(presented.strip().encode(), expected):
            return "wrong usage token"
        return None


@dataclass(frozen=True)
class ItemResult:
    http_status: int
    body: dict[str, Any]


def _item(status: int, request_id: str, outcome: str, **details: str) -> ItemResult:
    return ItemResult(status, {"request_id": request_id, "status": outcome, **details})


class SettlementService:
    def __init__(
        self,
        config: ConfigHolder,
        ledger: Ledger,
        journal: DegradedJournal,
        leases: LocalLeases,
        metrics: Metrics,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._journal = journal
        self._leases = leases
        self._metrics = metrics
        self._clock = clock

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
            return _item(
                503,
                report.request_id,
                "ledger_unavailable",
                message="the ledger cannot be reached; retry",
            )
        return await self._result(report, cost, settlement)

    async def _result(self, report: UsageReport, cost: int, settlement: Settlement) -> ItemResult:
        request_id = report.request_id
        if settlement.status is SettlementStatus.UNKNOWN:
            if await self._journal.settle_later(request_id, cost):
                return _item(202, request_id, "accepted", charged_usd=format_usd(cost))
            return _item(
                404,
                request_id,
                "unknown_request_id",
                message=f"no reservation for request id {request_id!r}: use the "
                "x-budget-request-id of the check (unsettled ones expire after the settle "
                "deadline; settled ones are remembered for a day)",
            )
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
