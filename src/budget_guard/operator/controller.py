"""The operator's loop: publish the config, turn spend into status, and notices into
Events and alerts. The work is in the rooms beside it (``publishing``, ``status_sync``,
``events``); this module decides when each runs.

One loop per operator, in the active replica (see ``leadership``). The resources
come from a cache that Kopf's watch events keep (see ``cache``), corrected by a full
list at the loop's start and every resync interval. Each turn: compile every resource
and publish when the config changed; read the webhooks' notices (waiting up to a
second for some); refresh every status from spend when notices arrived or the sync
interval passed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import aiohttp
from redis.asyncio import Redis

from budget_guard.domain.instants import utc_now
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.cache import ResourceCache, slim
from budget_guard.operator.compile import CompiledResources, Manifest, compile_resources
from budget_guard.operator.events import (
    Announcer,
    EventNotPosted,
    EventPoster,
    EventSink,
    NoticeRelay,
)
from budget_guard.operator.insights import Insights
from budget_guard.operator.kube import KubeApi, KubeUnavailable
from budget_guard.operator.leadership import Leadership
from budget_guard.operator.ledger_outage import LedgerOutage
from budget_guard.operator.metrics import OperatorMetrics
from budget_guard.operator.publishing import Publisher
from budget_guard.operator.settings import OperatorSettings
from budget_guard.operator.status_sync import BURSTBUDGETS, LLMBUDGETS, StatusSync
from budget_guard.store.connect import ledger_reader
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.keys import KeySchema
from budget_guard.store.notices import Notices
from budget_guard.store.published_config import PublishedConfigStore

log = logging.getLogger(__name__)

SYNC_GAP_SECONDS = 1.0  # the shortest time between two syncs
REDIS_CONNECT_SECONDS = 5.0  # an address that never answers is reported, not waited on


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
        self.metrics = metrics or OperatorMetrics()
        keys = KeySchema()
        self.notices = Notices(redis, keys)
        post_event = post_event or EventPoster(kube)
        self.announcer = Announcer(self.notices, alerts, post_event)
        self.outage = LedgerOutage(settings.redis_url, kube, post_event, clock)
        self.publisher = Publisher(PublishedConfigStore(redis, keys), clock)
        insights = Insights(redis, keys, self.announcer, settings.insight_interval_seconds)
        self.statuses = StatusSync(
            redis, keys, kube, alerts, self.notices, self.announcer, self.metrics, clock, insights
        )
        self.relay = NoticeRelay(self.announcer, self.notices)
        self.cache = ResourceCache((LLMBUDGETS, BURSTBUDGETS))
        self.statuses.written = self.observe
        self.dirty = asyncio.Event()
        self.compiled: CompiledResources | None = None
        self._changes = 0  # changes to the cache that compiling depends on
        self._compiled_at = -1  # ``_changes`` when ``compiled`` was compiled
        self._next_resync = 0.0
        self._next_sync = 0.0
        self._last_sync = -SYNC_GAP_SECONDS
        self._outbox_resumed = False
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
        redis = ledger_reader(settings.redis_url, socket_connect_timeout=REDIS_CONNECT_SECONDS)
        return cls(settings, redis, kube, alerts)

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Let the loop finish its turn, then close the clients."""
        await self.leadership.close(grace_seconds)
        await self.alerts.close()
        await self.redis.aclose()
        self.kube.close()

    async def take_turns(self, uid: str, stopped: Callable[[], bool]) -> None:
        """The daemon of peering object ``uid``: run the loop when it leads (see
        leadership)."""
        await self.leadership.take_turns(uid, stopped, self.lead)

    async def run_alone(self) -> None:
        """Standalone: the loop until the operator closes."""
        await self.leadership.take_turns("standalone", lambda: False, self.lead)

    # -- the loop ------------------------------------------------------------------

    async def lead(self, still_leading: Callable[[], bool]) -> None:
        """Run turns while this daemon leads; survives Redis and API outages."""
        log.info("operator loop started")
        self._outbox_resumed = False  # a previous leader may have left alerts undelivered
        self._next_resync = 0.0  # whatever happened while another replica led: list now
        while still_leading():
            try:
                await self.turn()
                if self.outage.answered():  # publish and sync now: Enforced and Ready again
                    self.dirty.set()
                    self._next_sync = 0.0
            except asyncio.CancelledError:
                raise
            except LedgerUnavailable as error:
                await self._ledger_down(error)
            except (EventNotPosted, KubeUnavailable) as error:  # the API server is away
                log.warning("operator loop turn stopped, tried again in a second: %s", error)
                self.metrics.reconcile_errors.inc()
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("operator loop turn failed; retrying")
                self.metrics.reconcile_errors.inc()
                await asyncio.sleep(1.0)
        self.metrics.forget_budgets()  # the next leader reports them
        log.info("operator loop stopped")

    async def _ledger_down(self, error: LedgerUnavailable) -> None:
        """Say so on the resources (and in the log, once), then wait a little."""
        self.outage.failed(error)
        self.metrics.reconcile_errors.inc()
        try:
            if self.outage.lasting:
                await self.outage.report(compile_resources(*self.resources()))
        except Exception as failure:  # the API server too: the next try says it again
            log.warning("the unreachable ledger is not yet shown on the resources: %s", failure)
        await self.outage.wait()

    async def turn(self) -> None:
        if time.monotonic() >= self._next_resync:
            await self.resync()
        if self.dirty.is_set() or self.compiled is None:
            self.dirty.clear()
            await asyncio.sleep(self.settings.publish_delay_seconds)  # gather a burst of edits
            changes = self._changes
            self._compiled_at, self.compiled = (
                changes,
                await self.publisher.publish(*self.resources()),
            )
            self._sync_soon()  # statuses follow a publication, at most every SYNC_GAP
        if not self._outbox_resumed and self.compiled is not None:
            await self.announcer.resume(self.compiled.manifests)
            self._outbox_resumed = True
        await self._relay_notices()
        if time.monotonic() >= self._next_sync:
            self._last_sync = time.monotonic()
            cpu_started = time.process_time()
            if await self.publisher.lost():
                self.dirty.set()  # Redis lost the config (a flush, a failover): publish again
            await self.sync()
            self.metrics.sync_cpu_seconds.observe(time.process_time() - cpu_started)
            self._next_sync = time.monotonic() + self.settings.sync_interval_seconds

    # -- the resources ---------------------------------------------------------------

    def observe(self, plural: str, resource: Mapping[str, Any], deleted: bool = False) -> None:
        """A resource as a watch event (or a status write) shows it."""
        if deleted:
            changed = self.cache.forget(plural, resource)
        else:
            changed = self.cache.observe(plural, resource)
        if changed:
            self._changes += 1
            self.dirty.set()

    async def resync(self) -> None:
        """List both kinds and correct the cache: what the watch missed (deletions and
        changes while the operator was down or not watching) is caught here."""
        namespaces = self.settings.namespaces
        listed = await asyncio.gather(
            self.kube.list_versioned(LLMBUDGETS, namespaces, slim),
            self.kube.list_versioned(BURSTBUDGETS, namespaces, slim),
        )
        changed = False
        for plural, lists in zip((LLMBUDGETS, BURSTBUDGETS), listed, strict=True):
            for namespace, items, version in lists:
                changed |= self.cache.replace(plural, items, version, namespace)
        if changed:
            log.info("resync: the resources changed (%d known)", len(self.cache))
            self._changes += 1
            self.dirty.set()
        self._next_resync = time.monotonic() + self.settings.resync_interval_seconds

    def resources(self) -> tuple[list[Manifest], list[Manifest]]:
        """Every LLMBudget and BurstBudget, as the cache has them now."""
        return self.cache.manifests(LLMBUDGETS), self.cache.manifests(BURSTBUDGETS)

    def _current(self) -> CompiledResources:
        """The compiled resources with each one's latest status (compiled again only when
        a spec or the set of resources changed)."""
        if self._compiled_at != self._changes or self.compiled is None:
            self._compiled_at = self._changes
            self.compiled = compile_resources(*self.resources())
        latest = {
            key: self.cache.get(_plural(manifest), key) or manifest
            for key, manifest in self.compiled.manifests.items()
        }
        return replace(self.compiled, manifests=latest)

    async def _relay_notices(self) -> None:
        """The webhooks' notices since the last turn (waiting up to the next sync, at most a
        second, for some), into Events and alerts; a sync follows soon."""
        wait_ms = int(max(0.0, min(1.0, self._next_sync - time.monotonic())) * 1000)
        notices = await self.notices.read(block_ms=max(wait_ms, 1))
        if not notices:
            return
        known = self.compiled.manifests if self.compiled else {}
        if any(notice.budget not in known for notice in notices):
            self.compiled = self._current()  # newer than the sync
        manifests = self.compiled.manifests if self.compiled else {}
        for notice in notices:
            await self.relay.relay(notice, manifests)
        self._sync_soon()

    def _sync_soon(self) -> None:
        self._next_sync = min(self._next_sync, self._last_sync + SYNC_GAP_SECONDS)

    async def unpublish(self, key: str) -> None:
        """Publish the config without ``key`` (namespace/name), which is being deleted."""
        self.compiled = await self.publisher.publish(*self.resources(), without=key)
        self._compiled_at = -1  # compiled without a resource the cache still holds

    async def sync(self) -> None:
        """Every status from spend, now (see ``status_sync``)."""
        self.compiled = self._current()
        await self.statuses.sync(self.compiled, self.publisher.generations)


def _plural(manifest: Manifest) -> str:
    return BURSTBUDGETS if manifest.get("kind") == "BurstBudget" else LLMBUDGETS
