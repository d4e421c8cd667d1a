"""The budgets a direct backend enforces, compiled as the webhook compiles them: from
budget files, or from the configuration the operator publishes in Redis. Either is
re-checked at most every ``refresh_seconds`` on the call path (no background task)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from budget_guard.client.errors import BudgetUnavailable
from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.manifest import ParsedManifests, parse_manifests
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.loaders.files import fingerprint, load_manifests, manifest_files
from budget_guard.store.keys import KeySchema
from budget_guard.store.published_config import PublishedConfigStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledBudgets:
    version: str
    snapshot: BudgetSnapshot
    planner: ChargePlanner


def compile_budgets(parsed: ParsedManifests, version: str) -> CompiledBudgets:
    snapshot = BudgetSnapshot(parsed.budgets, parsed.pools, version)
    for rejection in snapshot.rejections:
        log.error("budget %s is not enforced: %s", rejection.id, rejection.message)
    return CompiledBudgets(version, snapshot, ChargePlanner(snapshot))


class _Refresh:
    """Says when a source is due for a look."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._seconds
        return True


class FileBudgets:
    """LLMBudget and BurstBudget files (a file or a directory), reloaded when they change;
    an invalid change is logged and the budgets in force stay."""

    def __init__(self, path: Path, refresh_seconds: float) -> None:
        self._path = path
        self._refresh = _Refresh(refresh_seconds)
        self._seen: object = None
        self._current: CompiledBudgets | None = None

    async def current(self, redis: Redis) -> CompiledBudgets:
        if self._current is None or self._refresh.due():
            self._reload_if_changed()
        if self._current is None:
            raise BudgetUnavailable(f"no budgets could be loaded from {self._path}")
        return self._current

    def _reload_if_changed(self) -> None:
        try:
            stamp = fingerprint(manifest_files(self._path))
            if stamp == self._seen:
                return
            self._current = compile_budgets(load_manifests(self._path), repr(stamp))
            self._seen = stamp
        except (ValueError, OSError) as error:
            if self._current is None:
                raise BudgetUnavailable(str(error)) from error
            log.error("budget files rejected, the budgets in force stay: %s", error)


class PublishedBudgets:
    """The operator's published document in Redis, re-read when its version changes."""

    def __init__(self, keys: KeySchema, refresh_seconds: float) -> None:
        self._keys = keys
        self._refresh = _Refresh(refresh_seconds)
        self._current: CompiledBudgets | None = None

    async def current(self, redis: Redis) -> CompiledBudgets:
        if self._current is None or self._refresh.due():
            await self._reload_if_changed(PublishedConfigStore(redis, self._keys))
        if self._current is None:
            raise BudgetUnavailable("no budget configuration is published in Redis yet")
        return self._current

    async def _reload_if_changed(self, store: PublishedConfigStore) -> None:
        if self._current is not None and await store.version() == self._current.version:
            return
        published = await store.read()
        if published is None:
            return
        try:
            parsed = parse_manifests([*published.budgets, *published.burst_budgets], "redis")
        except ValueError as error:
            log.error("published config %s rejected: %s", published.version, error)
            return
        self._current = compile_budgets(parsed, published.version)
