"""Status from spend: every resource's status refreshed from its counters in Redis (one
pipeline for all of them), written only when it changed, at most ``STATUS_WRITERS``
writes in flight. On the way: a counter below the spend its status recorded is put
back (Redis lost data), and a new period is announced once."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis

from budget_guard.domain.budget import Budget
from budget_guard.domain.instants import unix_ms
from budget_guard.domain.money import format_usd, parse_usd
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.burst_review import BurstReviews
from budget_guard.operator.checkpoints import SpendCheckpoints
from budget_guard.operator.compile import CompiledResources, Manifest
from budget_guard.operator.conditions import EVENT_LEDGER_RESTORED, EVENT_PERIOD_RESET
from budget_guard.operator.events import Announcement, Announcer
from budget_guard.operator.insights import Insights
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.metrics import BudgetSample, OperatorMetrics, budget_sample, pool_sample
from budget_guard.operator.status import (
    budget_status,
    burst_status,
    changed,
    threshold_reached,
)
from budget_guard.store.keys import KeySchema
from budget_guard.store.notices import Notices
from budget_guard.store.usage import BudgetUsage, PoolUsage, read_usage

log = logging.getLogger(__name__)

LLMBUDGETS, BURSTBUDGETS = "llmbudgets", "burstbudgets"
STATUS_WRITERS = 8  # status patches in flight at once


class StatusSync:
    def __init__(
        self,
        redis: Redis,
        keys: KeySchema,
        kube: KubeApi,
        alerts: AlertSender,
        notices: Notices,
        announcer: Announcer,
        metrics: OperatorMetrics,
        clock: Callable[[], dt.datetime],
        insights: Insights | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._kube = kube
        self._alerts = alerts
        self._notices = notices
        self._announcer = announcer
        self._metrics = metrics
        self._clock = clock
        self._reviews = BurstReviews(redis, keys)
        self._checkpoints = SpendCheckpoints(redis, keys, kube, announcer)
        self._writers = asyncio.Semaphore(STATUS_WRITERS)
        self._insights = insights or Insights(redis, keys, announcer)

    async def sync(self, compiled: CompiledResources, published: Mapping[str, int]) -> None:
        """Refresh every status of ``compiled`` from spend; ``published``: the generations
        the webhooks enforce."""
        started = time.perf_counter()
        now = self._clock()
        usages = {
            usage.budget.id: usage
            for usage in await read_usage(self._redis, compiled.snapshot, now, self._keys)
        }
        pool_usages = {p.pool.id: p for u in usages.values() for p in u.pools}
        await self._insights.refresh(list(compiled.budgets.values()), usages, now)
        samples = await asyncio.gather(
            *(
                self._sync_budget(key, manifest, compiled, published, usages.get(key), now)
                if manifest.get("kind") == "LLMBudget"
                else self._sync_burst(key, manifest, compiled, pool_usages.get(key), now)
                for key, manifest in compiled.manifests.items()
            )
        )
        self._metrics.show_budgets(samples)
        self._metrics.sync_seconds.observe(time.perf_counter() - started)

    async def _sync_budget(
        self,
        key: str,
        manifest: Manifest,
        compiled: CompiledResources,
        published: Mapping[str, int],
        usage: BudgetUsage | None,
        now: dt.datetime,
    ) -> BudgetSample:
        budget = compiled.budgets.get(key)
        if budget is not None and usage is not None:
            usage = await self._restore_if_lost(budget, manifest, usage)
            if budget.scope.is_user_template:
                await self._checkpoints.keep_users(budget, manifest, usage)
            await self._announce_period_reset(budget, manifest, usage)
        spec = manifest.get("spec", {})
        await self._alerts.verify(key, manifest.get("metadata", {}).get("namespace", ""), spec)
        alerts = self._alerts.state(key, spec)
        insight = self._insights.get(key) if budget is not None else None
        status = budget_status(key, compiled, published, usage, alerts, now, insight)
        await self._write(LLMBUDGETS, key, manifest, status)
        if insight is not None:
            await self._insights.announce(manifest, status)
        return budget_sample(key, status, usage if budget is not None else None)

    async def _sync_burst(
        self,
        key: str,
        manifest: Manifest,
        compiled: CompiledResources,
        usage: PoolUsage | None,
        now: dt.datetime,
    ) -> BudgetSample:
        pool = compiled.pools.get(key)
        owner = compiled.budgets.get(pool.budget.id) if pool is not None else None
        if pool is not None and owner is not None and usage is not None:
            usage = await self._checkpoints.keep_pool(pool, owner, manifest, usage, now)
        review = await self._reviews.review(key, compiled, usage, now)
        status = burst_status(key, compiled, usage, review, now)
        await self._write(BURSTBUDGETS, key, manifest, status)
        return pool_sample(key, status, compiled.pools.get(key), usage)

    async def _write(
        self, plural: str, key: str, manifest: Manifest, status: Mapping[str, Any]
    ) -> None:
        if not changed(manifest.get("status"), status):
            return
        namespace, name = key.split("/", 1)
        async with self._writers:
            await self._kube.patch_status(plural, namespace, name, dict(status))

    async def _restore_if_lost(
        self, budget: Budget, manifest: Manifest, usage: BudgetUsage
    ) -> BudgetUsage:
        """A counter below the spend its status recorded this period lost data: put it back."""
        status = manifest.get("status") or {}
        if budget.scope.is_user_template or status.get("periodKey") != usage.window.key:
            return usage
        try:
            recorded = parse_usd(status.get("spent", "0"), "status.spent", allow_zero=True)
        except ValueError:
            return usage
        if usage.spent >= recorded:
            return usage
        window = usage.window
        expiry = unix_ms(window.end + (window.end - window.start))
        restored = await self._notices.restore(
            budget, window.key, recorded, expiry, threshold_reached(status)
        )
        if restored <= 0:
            return usage
        uid = manifest.get("metadata", {}).get("uid", budget.id)
        await self._announcer.say(
            Announcement(
                manifest,
                "Warning",
                EVENT_LEDGER_RESTORED,
                f"the ledger held ${format_usd(usage.spent)} spent this period, below the "
                f"${format_usd(recorded)} last recorded: restored ${format_usd(restored)}",
                f"{uid}:restored:{window.key}:{usage.spent}:{recorded}",
            ),
            remember=False,
        )
        log.warning("restored %s micro-USD of lost spend on %s", restored, budget.id)
        return replace(usage, spent=usage.spent + restored, used=usage.used + restored)

    async def _announce_period_reset(
        self, budget: Budget, manifest: Manifest, usage: BudgetUsage
    ) -> None:
        previous = (manifest.get("status") or {}).get("periodKey")
        if not previous or previous == usage.window.key:
            return
        uid = manifest.get("metadata", {}).get("uid", budget.id)
        await self._announcer.say(
            Announcement(
                manifest,
                "Normal",
                EVENT_PERIOD_RESET,
                f"a new {budget.period.value.lower()} period began: {usage.window.key} "
                f"(the last one, {previous}, ended)",
                f"{uid}:reset:{usage.window.key}",
            )
        )
