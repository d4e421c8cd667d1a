"""The webhook's background work: the configuration sources, the sweeper of overdue
reservations, the utilization gauges, JWKS refresh, the journal replay, and the lease
commits and returns. Started before the listeners, stopped after them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.published_config import PublishedConfigStore
from budget_guard.store.usage import read_usage
from budget_guard.webhook.active_config import (
    ActiveConfig,
    ConfigHolder,
    FileSource,
    LabelValues,
    PublishedSource,
)
from budget_guard.webhook.identity import JwksKeys
from budget_guard.webhook.ledger_access import LedgerAccess
from budget_guard.webhook.metrics import Metrics
from budget_guard.webhook.settings import WebhookSettings
from budget_guard.webhook.settlement import SettlementService, Source

log = logging.getLogger(__name__)

UTILIZATION_REFRESH_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
JOURNAL_REPLAY_SECONDS = 1.0


@dataclass
class BackgroundWork:
    settings: WebhookSettings
    config: ConfigHolder
    ledger: LedgerAccess
    settlement: SettlementService
    metrics: Metrics
    jwks: JwksKeys | None
    clock: Callable[[], dt.datetime]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.config.listeners.append(self._on_new_config)
        if not await self.ledger.channel.start():  # it keeps trying in the background
            log.warning("the ledger cannot be reached yet; budgets' failure modes decide meanwhile")
        if self.jwks is not None:
            await self.jwks.refresh(session)
            self._run(self.jwks.keep_fresh(session))
        await self._start_config_source()
        ledger = self.ledger
        sweep_seconds = self.settings.reservations.sweep_interval_seconds
        self._run(self._every(sweep_seconds, self._sweep, "sweep"))
        self._run(
            self._every(UTILIZATION_REFRESH_SECONDS, self._refresh_utilization, "utilization")
        )
        self._run(ledger.journal.keep_replaying(JOURNAL_REPLAY_SECONDS, self.clock))
        self._run(ledger.leases.keep_flushing())
        self._run(ledger.leases.keep_returning_idle())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _, stuck = await asyncio.wait(self.tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in stuck:
                log.error("background task %s did not stop in time", task.get_name())
        self.tasks.clear()

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(work))

    async def _start_config_source(self) -> None:
        settings = self.settings
        metrics = settings.metrics
        labels = LabelValues(metrics.tenants, metrics.features, metrics.models)
        source = settings.config
        if source.budgets_path is not None:
            files = FileSource(self.config, source.budgets_path, source.pricing_file, labels)
            files.load()
            self._run(files.watch(source.reload_interval_seconds))
            return
        operations = self.ledger.operations
        store = PublishedConfigStore(operations.client, operations.keys)
        published = PublishedSource(self.config, store, source.pricing_file, labels)
        with contextlib.suppress(LedgerUnavailable):
            await published.load()
        self._run(published.watch(source.version_check_seconds))

    async def _every(self, seconds: float, work: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``work`` every ``seconds``; a ledger outage is counted under ``what``."""
        while True:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a cancellation turned into an error
                raise asyncio.CancelledError
            await asyncio.sleep(seconds)
            try:
                await work()
            except LedgerUnavailable as error:
                log.warning("%s skipped: ledger unavailable (%s)", what, error)
                self.metrics.ledger_errors.labels(what).inc()
            except Exception:
                log.exception("%s failed", what)

    async def _sweep(self) -> None:
        for settlement in await self.ledger.operations.sweep_expired(self.clock()):
            self.settlement.record_spend(settlement)
            self.metrics.count_settlement(Source.SWEEPER.value, "settled")

    async def _refresh_utilization(self) -> None:
        config = self.config.current
        if config is None:
            return
        gauge = self.metrics.utilization
        ledger = self.ledger.operations
        for usage in await read_usage(ledger.client, config.snapshot, self.clock(), ledger.keys):
            if not usage.budget.scope.is_user_template:
                gauge.labels(budget=usage.budget.id).set(usage.utilization)

    def _on_new_config(self, config: ActiveConfig) -> None:
        # Budgets may be gone from the new config; the next refresh re-fills the rest.
        self.metrics.utilization.clear()
        # Limits may have changed: leases taken under the old ones go back.
        self._run(self._return_leases())

    async def _return_leases(self) -> None:
        try:
            await self.ledger.leases.close()
        except LedgerUnavailable as error:
            log.warning("leases could not be returned after a config change: %s", error)
