"""Status from spend: every resource's status refreshed from its counters in Redis (one
write of script calls for all of them), written only when it changed, at most
``STATUS_WRITERS`` writes in flight. On the way: a counter below the spend its status
recorded is put back (Redis lost data), and a new period is announced once.

Most syncs change nothing, and at ten thousand budgets even comparing every status
costs more than the goal of a sync (see docs/operator.md). So each LLMBudget's status
is recomputed only when something it is made of changed since the last sync: its
manifest (the cache keeps an unchanged one as the same object), its counters' raw
answer from Redis, the generation the webhooks enforce, its alert state or its
insight. Otherwise the last sync's figures stand."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from budget_guard.domain.budget import Budget
from budget_guard.domain.instants import unix_ms
from budget_guard.domain.money import format_usd, parse_usd
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.burst_review import BurstReviews
from budget_guard.operator.checkpoints import SpendCheckpoints
from budget_guard.operator.compile import CompiledResources, Manifest
from budget_guard.operator.conditions import EVENT_PERIOD_RESET
from budget_guard.operator.events import Announcement, Announcer
from budget_guard.operator.insights import Insights
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.metrics import BudgetSample, OperatorMetrics, budget_sample, pool_sample
from budget_guard.operator.status import (
    AlertState,
    Insight,
    budget_status,
    burst_status,
    changed,
    threshold_reached,
)
from budget_guard.store.keys import KeySchema
from budget_guard.store.notices import Notices
from budget_guard.store.usage import BudgetUsage, PoolUsage, UsageQuery

log = logging.getLogger(__name__)

LLMBUDGETS, BURSTBUDGETS = "llmbudgets", "burstbudgets"
STATUS_WRITERS = 8  # status patches in flight at once
Written = Callable[[str, Mapping[str, Any]], None]  # (plural, the object as written)


@dataclass(frozen=True)
class _Seen:
    """What an LLMBudget's status was last made of, and the metrics sample it gave."""

    manifest: Manifest
    inputs: tuple[int | None, BudgetUsage | None, AlertState | None, Insight | None]
    sample: BudgetSample


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
        self.written: Written | None = None  # told each status written
        self._query: UsageQuery | None = None
        self._answers: list[Any] = []  # the query's last raw answers, one per budget
        self._usages: list[BudgetUsage] = []  # and the usage read from each
        self._seen: dict[str, _Seen] = {}

    async def sync(self, compiled: CompiledResources, published: Mapping[str, int]) -> None:
        """Refresh every status of ``compiled`` from spend; ``published``: the generations
        the webhooks enforce."""
        started = time.perf_counter()
        now = self._clock()
        usages = await self._read_usage(compiled, now)
        pool_usages = {p.pool.id: p for u in usages.values() for p in u.pools}
        cpu_started = time.process_time()
        if await self._insights.refresh(list(compiled.budgets.values()), usages, now):
            self._metrics.insight_cpu_seconds.observe(time.process_time() - cpu_started)
        samples: list[BudgetSample] = []
        work = []
        for key, manifest in compiled.manifests.items():
            if manifest.get("kind") != "LLMBudget":
                work.append(self._sync_burst(key, manifest, compiled, pool_usages.get(key), now))
                continue
            usage = usages.get(key)
            seen = self._unchanged(key, manifest, published, usage)
            if seen is not None:
                samples.append(seen.sample)
            else:
                work.append(self._sync_budget(key, manifest, compiled, published, usage, now))
        samples.extend(await asyncio.gather(*work))
        self._metrics.show_budgets(samples)
        self._metrics.sync_seconds.observe(time.perf_counter() - started)

    async def _read_usage(
        self, compiled: CompiledResources, now: dt.datetime
    ) -> dict[str, BudgetUsage]:
        """Every budget's usage; a budget whose counters answer as before keeps its usage
        object. The query is encoded again only for a new config or a new period."""
        if self._query is None or not self._query.holds(compiled.snapshot, now):
            self._query = UsageQuery.of(compiled.snapshot, now, self._keys)
            self._answers, self._usages = [], []
            self._seen = {k: v for k, v in self._seen.items() if k in compiled.manifests}
        query = self._query
        answers = await query.read(self._redis)
        before, usages = self._answers, self._usages
        fresh = len(before) == len(answers)
        self._usages = [
            usages[n] if fresh and before[n] == answer else query.usage(n, answer)
            for n, answer in enumerate(answers)
        ]
        self._answers = answers
        return {usage.budget.id: usage for usage in self._usages}

    def _inputs(
        self, key: str, manifest: Manifest, published: Mapping[str, int], usage: BudgetUsage | None
    ) -> tuple[int | None, BudgetUsage | None, AlertState | None, Insight | None]:
        alerts = self._alerts.state(key, manifest.get("spec", {}))
        return published.get(key), usage, alerts, self._insights.get(key)

    def _unchanged(
        self, key: str, manifest: Manifest, published: Mapping[str, int], usage: BudgetUsage | None
    ) -> _Seen | None:
        """The last sync's outcome, if nothing its status is made of changed since (a
        budget with alerts checks its Secret first, in ``_sync_budget``)."""
        seen = self._seen.get(key)
        if seen is None or seen.manifest is not manifest or manifest.get("spec", {}).get("alerts"):
            return None
        return seen if seen.inputs == self._inputs(key, manifest, published, usage) else None

    async def _sync_budget(
        self,
        key: str,
        manifest: Manifest,
        compiled: CompiledResources,
        published: Mapping[str, int],
        usage: BudgetUsage | None,
        now: dt.datetime,
    ) -> BudgetSample:
        spec = manifest.get("spec", {})
        await self._alerts.verify(key, manifest.get("metadata", {}).get("namespace", ""), spec)
        inputs = self._inputs(key, manifest, published, usage)
        seen = self._seen.get(key)
        if seen is not None and seen.manifest is manifest and seen.inputs == inputs:
            return seen.sample
        budget = compiled.budgets.get(key)
        if budget is not None and usage is not None:
            usage = await self._restore_if_lost(budget, manifest, usage)
            if budget.scope.is_user_template:
                await self._checkpoints.keep_users(budget, manifest, usage)
            await self._announce_period_reset(budget, manifest, usage)
        alerts = self._alerts.state(key, spec)
        insight = self._insights.get(key) if budget is not None else None
        status = budget_status(key, compiled, published, usage, alerts, now, insight)
        await self._write(LLMBUDGETS, key, manifest, status)
        if insight is not None:
            await self._insights.announce(manifest, status)
        sample = budget_sample(key, status, usage if budget is not None else None)
        self._seen[key] = _Seen(manifest, inputs, sample)
        return sample

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
            written = await self._kube.patch_status(plural, namespace, name, dict(status))
        if written is not None and self.written is not None:
            self.written(plural, written)

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
        await self._announcer.say_restored(
            manifest,
            budget.id,
            f"the ledger held ${format_usd(usage.spent)} spent this period, below the "
            f"${format_usd(recorded)} last recorded: restored ${format_usd(restored)}",
            f"restored:{window.key}:{usage.spent}:{recorded}",
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
