"""The operator's loop: publish the config, turn spend into status, and notices into
Events and alerts.

One loop per operator, in the active replica (see ``leadership``). The loop lists
the resources itself (from the API server's watch cache) when it publishes or
syncs: a complete picture each time, with no cache of its own to keep consistent.
Each turn: compile every resource and publish if the
config changed; read the webhooks' notices (waiting up to a second for some);
refresh every status from spend when notices arrived or the sync interval passed.
All Redis reads of a sync are one pipeline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, cast

import aiohttp
import kopf
from redis.asyncio import Redis

from budget_guard.domain.budget import Budget
from budget_guard.domain.money import format_usd, parse_usd
from budget_guard.operator import conditions as c
from budget_guard.operator.alerts import Alert, AlertSender
from budget_guard.operator.compile import (
    Compiled,
    Manifest,
    compile_resources,
    key_of,
    trim,
)
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.leadership import Leadership
from budget_guard.operator.metrics import BudgetSample, OperatorMetrics, budget_sample, pool_sample
from budget_guard.operator.settings import OperatorSettings
from budget_guard.operator.status import (
    budget_status,
    burst_status,
    changed,
    pool_phase,
    reached_percent,
)
from budget_guard.store.keys import KeySchema
from budget_guard.store.notices import Notice, Notices
from budget_guard.store.published_config import PublishedConfigStore, config_version
from budget_guard.store.usage import BudgetUsage, read_daily_spend, read_usage

log = logging.getLogger(__name__)

NOTICE_MEMORY = dt.timedelta(days=400)  # said once: remembered longer than any period
LLMBUDGETS, BURSTBUDGETS = "llmbudgets", "burstbudgets"
STATUS_WRITERS = 8  # status patches in flight at once
SYNC_GAP_SECONDS = 1.0  # the shortest time between two syncs (a sync lists every resource)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


EventSink = Callable[[Manifest, str, str, str], None]  # resource, type, reason, message


class Controller:
    def __init__(
        self,
        settings: OperatorSettings,
        redis: Redis,
        kube: KubeApi,
        alerts: AlertSender,
        clock: Callable[[], dt.datetime] = utc_now,
        post_event: EventSink | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.kube = kube
        self.alerts = alerts
        self.clock = clock
        self.post_event = post_event or post_with_kopf
        self.metrics = metrics or OperatorMetrics()
        self.keys = KeySchema()
        self.config = PublishedConfigStore(redis, self.keys)
        self.notices = Notices(redis, self.keys)
        self.dirty = asyncio.Event()
        self.compiled: Compiled | None = None
        self.published: dict[str, int] = {}
        self.version: str | None = None
        self._publish_lock = asyncio.Lock()
        self._next_sync = 0.0
        self._last_sync = -SYNC_GAP_SECONDS
        self._reviews: dict[str, dict[str, Any]] = {}
        self._writers = asyncio.Semaphore(STATUS_WRITERS)
        self.leadership = Leadership()

    @classmethod
    def open(cls, settings: OperatorSettings) -> Controller:
        """A controller with its own Redis client, Kubernetes client and alert sender."""
        kube = KubeApi()
        alerts = AlertSender(
            kube,
            aiohttp.ClientSession(),
            attempts=settings.alert_attempts,
            first_delay=settings.alert_first_delay_seconds,
            secret_namespaces=frozenset(settings.alert_secret_namespaces),
        )
        return cls(settings, Redis.from_url(settings.redis_url), kube, alerts)

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Let the loop finish its turn, then close the clients."""
        await self.leadership.close(grace_seconds)
        await self.alerts.close()
        await self.redis.aclose()
        self.kube.close()

    async def take_turns(self, uid: str, stopped: Callable[[], bool]) -> None:
        """The daemon of resource ``uid``: run the loop when it leads (see leadership)."""
        await self.leadership.take_turns(uid, stopped, self.lead)

    # -- the loop ------------------------------------------------------------------

    async def lead(self, still_leading: Callable[[], bool]) -> None:
        """Run turns while this daemon leads; survives Redis and API outages."""
        log.info("operator loop started")
        while still_leading():
            try:
                await self.turn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("operator loop turn failed; retrying")
                self.metrics.reconcile_errors.inc()
                await asyncio.sleep(1.0)
        self.metrics.forget_budgets()  # the next leader reports them
        log.info("operator loop stopped")

    async def turn(self) -> None:
        listed: tuple[list[Manifest], list[Manifest]] | None = None
        if self.dirty.is_set() or self.compiled is None:
            self.dirty.clear()
            await asyncio.sleep(self.settings.publish_delay_seconds)  # gather a burst of edits
            listed = await self.resources()
            await self.publish(*listed)
        wait_ms = int(max(0.0, min(1.0, self._next_sync - time.monotonic())) * 1000)
        notices = await self.notices.read(block_ms=max(wait_ms, 1))
        known = self.compiled.manifests if self.compiled else {}
        if any(notice.budget not in known for notice in notices):
            listed = await self.resources()  # a budget newer than the last sync
            self.compiled = compile_resources(*listed)
        for notice in notices:
            await self.relay(notice)
            await self.notices.done(notice)
        if notices or listed:  # sync soon, but at most every SYNC_GAP in a storm of notices
            self._next_sync = min(self._next_sync, self._last_sync + SYNC_GAP_SECONDS)
        if time.monotonic() >= self._next_sync:
            self._last_sync = time.monotonic()
            if await self.config.version() != self.version:
                self.dirty.set()  # Redis lost the config (a flush, a failover): publish again
                self.version = None
            self.compiled = compile_resources(*(listed or await self.resources()))
            await self.sync()
            self._next_sync = time.monotonic() + self.settings.sync_interval_seconds

    async def resources(self) -> tuple[list[Manifest], list[Manifest]]:
        """Every LLMBudget and BurstBudget, as the API server has them now."""
        namespaces = self.settings.namespaces
        budgets, bursts = await asyncio.gather(
            self.kube.list_resources(LLMBUDGETS, namespaces),
            self.kube.list_resources(BURSTBUDGETS, namespaces),
        )
        return [trim(b) for b in budgets], [trim(b) for b in bursts]

    async def unpublish(self, key: str) -> None:
        """Publish the config without ``key`` (namespace/name), which is being deleted."""
        await self.publish(*await self.resources(), without=key)

    async def publish(
        self, budgets: Iterable[Manifest], bursts: Iterable[Manifest], *, without: str = ""
    ) -> None:
        """Compile every live resource (less ``without``) and publish it if it changed."""
        async with self._publish_lock:
            compiled = compile_resources(
                (m for m in budgets if key_of(m) != without),
                (m for m in bursts if key_of(m) != without),
            )
            budget_manifests, burst_manifests = compiled.publishable()
            version = config_version(budget_manifests, burst_manifests)
            if version != self.version:
                await self.config.publish(
                    budget_manifests, burst_manifests, c.rfc3339(self.clock())
                )
                log.info(
                    "published config %s: %d budgets, %d burst pools, %d rejected",
                    version,
                    len(compiled.budgets),
                    len(compiled.pools),
                    len(compiled.problems),
                )
                self.version = version
            self.compiled = compiled
            self.published = compiled.generations

    # -- status from spend ---------------------------------------------------------

    async def sync(self) -> None:
        compiled = self.compiled
        if compiled is None:
            return
        started = time.perf_counter()
        now = self.clock()
        usages = {
            usage.budget.id: usage
            for usage in await read_usage(self.redis, compiled.snapshot, now, self.keys)
        }
        pool_usages = {p.pool.id: p for u in usages.values() for p in u.pools}
        samples = await asyncio.gather(
            *(
                self._sync_budget(key, manifest, compiled, usages.get(key), now)
                if manifest.get("kind") == "LLMBudget"
                else self._sync_burst(key, manifest, compiled, pool_usages.get(key), now)
                for key, manifest in compiled.manifests.items()
            )
        )
        self.metrics.show_budgets(samples)
        self.metrics.sync_seconds.observe(time.perf_counter() - started)

    async def _sync_budget(
        self,
        key: str,
        manifest: Manifest,
        compiled: Compiled,
        usage: BudgetUsage | None,
        now: dt.datetime,
    ) -> BudgetSample:
        budget = compiled.budgets.get(key)
        if budget is not None and usage is not None:
            usage = await self._restore_if_lost(budget, manifest, usage)
            await self._announce_period_reset(budget, manifest, usage)
        spec = manifest.get("spec", {})
        await self.alerts.verify(key, manifest.get("metadata", {}).get("namespace", ""), spec)
        alerts = self.alerts.state(key, spec)
        status = budget_status(key, compiled, self.published, usage, alerts, now)
        await self._write(LLMBUDGETS, key, manifest, status)
        return budget_sample(key, status, usage if budget is not None else None)

    async def _sync_burst(
        self, key: str, manifest: Manifest, compiled: Compiled, usage: Any, now: dt.datetime
    ) -> BudgetSample:
        review = await self._review(key, compiled, usage, now)
        status = burst_status(key, compiled, usage, review, now)
        await self._write(BURSTBUDGETS, key, manifest, status)
        return pool_sample(key, status, compiled.pools.get(key), usage)

    async def _write(
        self, plural: str, key: str, manifest: Manifest, status: dict[str, Any]
    ) -> None:
        if not changed(manifest.get("status"), status):
            return
        namespace, name = key.split("/", 1)
        async with self._writers:
            await self.kube.patch_status(plural, namespace, name, status)

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
        expiry = int((window.end + (window.end - window.start)).timestamp() * 1000)
        restored = await self.notices.restore(
            budget, window.key, recorded, expiry, reached_percent(status)
        )
        if restored <= 0:
            return usage
        self.post_event(
            manifest,
            "Warning",
            c.EVENT_LEDGER_RESTORED,
            f"the ledger held ${format_usd(usage.spent)} spent this period, below the "
            f"${format_usd(recorded)} last recorded: restored ${format_usd(restored)}",
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
        if await self.notices.first_time(f"{uid}:reset:{usage.window.key}", NOTICE_MEMORY):
            self.post_event(
                manifest,
                "Normal",
                c.EVENT_PERIOD_RESET,
                f"a new {budget.period.value.lower()} period began: {usage.window.key} "
                f"(the last one, {previous}, ended)",
            )

    async def _review(
        self, key: str, compiled: Compiled, usage: Any, now: dt.datetime
    ) -> dict[str, Any] | None:
        """The post-spend analysis of a burst pool, once it has ended."""
        pool = compiled.pools.get(key)
        if pool is None:
            return None
        current = (compiled.manifests[key].get("status") or {}).get("review")
        if current:
            return dict(current)
        if pool_phase(pool, usage, now) not in ("Exhausted", "Expired"):
            return None
        if key in self._reviews:
            return self._reviews[key]
        budget = compiled.budgets.get(pool.budget.id)
        end = min(now, pool.valid_until)
        daily = (
            await read_daily_spend(self.redis, budget, pool.valid_from, end, self.keys)
            if budget is not None
            else {}
        )
        peak_day, peak_spend = max(daily.items(), key=lambda item: item[1], default=("", 0))
        review = {
            "spent": format_usd(usage.used if usage else 0),
            "requests": usage.requests if usage else 0,
            "peakDay": str(peak_day),
            "peakDaySpent": format_usd(peak_spend),
            "approvedBy": pool.approved_by,
            "reason": pool.reason,
            "endedAt": c.rfc3339(end),
        }
        self._reviews[key] = review
        return review

    # -- notices into Events and alerts ----------------------------------------------

    async def relay(self, notice: Notice) -> None:
        compiled = self.compiled
        manifest = compiled.manifests.get(notice.budget) if compiled else None
        if manifest is None:
            return  # a budget deleted since: its history stays, nobody to tell
        uid = manifest.get("metadata", {}).get("uid", notice.budget)
        marker = f"{uid}:{notice.period}:{notice.subject}:{notice.kind}:{notice.threshold}"
        if notice.kind.startswith("burst_"):
            marker = f"{uid}:{notice.pool}:{notice.kind}"
        if not await self.notices.first_time(marker, NOTICE_MEMORY):
            return
        kind, reason, message = _describe(notice)
        self.post_event(manifest, kind, reason, message)
        details = {
            "period": notice.period,
            "subject": notice.subject or None,
            "threshold": notice.threshold or None,
            "pool": notice.pool or None,
            "usedUsd": format_usd(notice.used),
            "limitUsd": format_usd(notice.limit),
        }
        namespace = manifest.get("metadata", {}).get("namespace", "default")
        self.alerts.send(
            Alert(notice.budget, reason, message, {k: v for k, v in details.items() if v}),
            namespace,
            manifest.get("spec", {}),
        )


def post_with_kopf(manifest: Manifest, kind: str, reason: str, message: str) -> None:
    """Queue a Kubernetes Event on the resource with Kopf's poster (in the background)."""
    kopf.event(_reference(manifest), type=kind, reason=reason, message=message)


def _reference(manifest: Manifest) -> kopf.Body:
    """What an Event needs to name the object."""
    metadata = manifest.get("metadata", {})
    raw = {
        "apiVersion": manifest.get("apiVersion"),
        "kind": manifest.get("kind"),
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
    }
    return kopf.Body(cast("kopf.RawBody", raw))


def _describe(notice: Notice) -> tuple[str, str, str]:
    who = f"user {notice.subject}: " if notice.subject else ""
    used, limit = format_usd(notice.used), format_usd(notice.limit)
    if notice.kind == "soft_limit":
        return (
            "Warning",
            c.EVENT_SOFT_LIMIT,
            f"{who}{notice.threshold}% of the limit reached in period {notice.period} "
            f"(${used} of ${limit})",
        )
    if notice.kind == "exhausted":
        return (
            "Warning",
            c.EVENT_EXHAUSTED,
            f"{who}the limit is reached in period {notice.period} (${used} of ${limit}): "
            "requests are denied until the period resets",
        )
    if notice.kind == "burst_activated":
        return (
            "Normal",
            c.EVENT_BURST_ACTIVATED,
            f"the budget is spent; burst pool {notice.pool} takes over (${limit} approved)",
        )
    return (
        "Warning",
        c.EVENT_BURST_EXHAUSTED,
        f"burst pool {notice.pool} is spent (${used} of ${limit})",
    )
