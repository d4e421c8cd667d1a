"""The configuration in force, compiled off the hot path and swapped in whole.

Standalone mode watches budget files (and the price file); cluster mode follows
the operator's published document in Redis. Either way a bad new config is logged
with its reason and the previous one stays in force.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.manifest import ParsedManifests, parse_manifests
from budget_guard.domain.pricing import PriceTable
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.loaders.files import fingerprint, load_manifests, load_price_table, manifest_files
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.published_config import PublishedConfigStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelValues:
    """The values spend metrics may carry as labels; everything else is "other"."""

    tenants: frozenset[str]
    features: frozenset[str]
    models: frozenset[str]

    def tenant(self, value: str | None) -> str:
        return value if value in self.tenants else ("none" if value is None else "other")

    def feature(self, value: str | None) -> str:
        return value if value in self.features else ("none" if value is None else "other")

    def model(self, value: str | None) -> str:
        return value if value in self.models else ("none" if value is None else "other")


@dataclass(frozen=True)
class ActiveConfig:
    """The configuration in force: budgets compiled for resolution, prices, labels."""

    version: str
    source: str
    snapshot: BudgetSnapshot
    planner: ChargePlanner
    prices: PriceTable
    labels: LabelValues
    loaded_at: dt.datetime


def compile_config(
    parsed: ParsedManifests,
    prices: PriceTable,
    version: str,
    source: str,
    allowed: LabelValues | None = None,
) -> ActiveConfig:
    snapshot = BudgetSnapshot(parsed.budgets, parsed.pools, version)
    for rejection in snapshot.rejections:
        log.error("budget %s is not enforced: %s", rejection.id, rejection.message)
    named = LabelValues(
        tenants=frozenset(b.scope.tenant for b in snapshot.budgets if b.scope.tenant),
        features=frozenset(b.scope.feature for b in snapshot.budgets if b.scope.feature),
        models=frozenset(prices.models),
    )
    labels = LabelValues(
        tenants=allowed.tenants if allowed and allowed.tenants else named.tenants,
        features=allowed.features if allowed and allowed.features else named.features,
        models=allowed.models if allowed and allowed.models else named.models,
    )
    return ActiveConfig(
        version=version,
        source=source,
        snapshot=snapshot,
        planner=ChargePlanner(snapshot),
        prices=prices,
        labels=labels,
        loaded_at=dt.datetime.now(dt.UTC),
    )


@dataclass
class ConfigHolder:
    """The one mutable cell: the hot path reads ``current``; reloaders replace it."""

    current: ActiveConfig | None = None
    last_error: str | None = None
    listeners: list[Callable[[ActiveConfig], None]] = field(default_factory=list)

    def install(self, config: ActiveConfig) -> None:
        previous = self.current
        self.current = config
        self.last_error = None
        log.info(
            "config %s in force from %s: %d budgets, %d burst pools",
            config.version,
            config.source,
            len(config.snapshot.budgets),
            len(config.snapshot.pools),
            extra={"previous_version": previous.version if previous else None},
        )
        for listener in self.listeners:
            listener(config)

    def fail(self, reason: str) -> None:
        self.last_error = reason
        kept = self.current.version if self.current else "none"
        log.error("new config rejected, version %s stays in force: %s", kept, reason)


def _version_of(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class FileSource:
    """Standalone mode: budget files (and the price file), re-read when they change."""

    def __init__(
        self, holder: ConfigHolder, budgets: Path, pricing: Path | None, allowed: LabelValues
    ) -> None:
        self._holder = holder
        self._budgets = budgets
        self._pricing = pricing
        self._allowed = allowed
        self._seen: object = None

    def _watched(self) -> list[Path]:
        files = manifest_files(self._budgets)
        return files + ([self._pricing] if self._pricing is not None else [])

    def load(self) -> None:
        """Load now; on error keep the previous config and record why."""
        try:
            watched = self._watched()
            self._seen = fingerprint(watched)
            config = compile_config(
                load_manifests(self._budgets),
                load_price_table(self._pricing),
                _version_of(watched),
                f"files:{self._budgets}",
                self._allowed,
            )
        except (ValueError, OSError) as error:
            self._holder.fail(str(error))
            return
        self._holder.install(config)

    def changed(self) -> bool:
        try:
            return fingerprint(self._watched()) != self._seen
        except ValueError:
            return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                self.load()


class PublishedSource:
    """Cluster mode: the operator's published document, on announcement and on a timer."""

    def __init__(
        self,
        holder: ConfigHolder,
        store: PublishedConfigStore,
        pricing: Path | None,
        allowed: LabelValues,
    ) -> None:
        self._holder = holder
        self._store = store
        self._pricing = pricing
        self._allowed = allowed
        self._prices: PriceTable | None = None

    async def load(self) -> None:
        try:
            if self._prices is None:
                self._prices = load_price_table(self._pricing)
            published = await self._store.read()
        except ValueError as error:
            self._holder.fail(str(error))
            return
        if published is None:
            self._holder.fail("no config published in Redis yet (is the operator running?)")
            return
        current = self._holder.current
        if current is not None and current.version == published.version:
            return
        try:
            parsed = parse_manifests([*published.budgets, *published.burst_budgets], "redis")
            config = compile_config(parsed, self._prices, published.version, "redis", self._allowed)
        except ValueError as error:
            self._holder.fail(f"published config {published.version}: {error}")
            return
        self._holder.install(config)

    async def watch(self, version_check_seconds: float) -> None:
        """Reload on each announcement, and check the version on a timer."""
        while True:
            try:
                async for _ in self._store.changes(version_check_seconds):
                    current = self._holder.current
                    if current is None or await self._store.version() != current.version:
                        await self.load()
            except LedgerUnavailable as error:
                log.warning("config watch lost Redis (%s); retrying", error)
                await asyncio.sleep(min(version_check_seconds, 2.0))
