"""Publishing: every live LLMBudget and BurstBudget, validated with the domain's rules,
becomes one versioned configuration document in Redis that the webhooks enforce. A
resource that fails validation is left out (its status says why); the rest is
unaffected. Nothing is written when the content (and so the version) did not change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable

from budget_guard.domain.instants import rfc3339
from budget_guard.operator.compile import CompiledResources, Manifest, compile_resources, key_of
from budget_guard.store.published_config import PublishedConfigStore, config_version

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, store: PublishedConfigStore, clock: Callable[[], dt.datetime]) -> None:
        self._store = store
        self._clock = clock
        self._lock = asyncio.Lock()
        self.version: str | None = None  # what this operator last published
        self.generations: dict[str, int] = {}  # accepted resources, as published

    async def publish(
        self, budgets: Iterable[Manifest], bursts: Iterable[Manifest], *, without: str = ""
    ) -> CompiledResources:
        """Compile every live resource (less ``without``) and publish it if it changed."""
        async with self._lock:
            compiled = compile_resources(
                (m for m in budgets if key_of(m) != without),
                (m for m in bursts if key_of(m) != without),
            )
            budget_manifests, burst_manifests = compiled.publishable()
            version = config_version(budget_manifests, burst_manifests)
            if version != self.version:
                await self._store.publish(budget_manifests, burst_manifests, rfc3339(self._clock()))
                log.info(
                    "published config %s: %d budgets, %d burst pools, %d rejected",
                    version,
                    len(compiled.budgets),
                    len(compiled.pools),
                    len(compiled.problems),
                )
                self.version = version
            self.generations = compiled.generations
            return compiled

    async def lost(self) -> bool:
        """Did Redis lose what was published (a flush, a failover)? Then publish again."""
        if await self._store.version() == self.version:
            return False
        self.version = None
        return True
