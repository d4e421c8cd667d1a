"""The published budget configuration: one versioned document in Redis.

The operator publishes every accepted LLMBudget and BurstBudget as one JSON
document, switching the document and its version in one transaction and then
announcing the version on a pub/sub channel. Webhooks read it at start, on each
announcement, and on a periodic version check (a missed message only delays).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster

from budget_guard.store.errors import UNAVAILABLE, LedgerUnavailable, ledger_call
from budget_guard.store.keys import KeySchema

CLUSTER_POLL_SECONDS = 1.0  # how soon webhooks on Redis Cluster see a new version


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class PublishedConfig:
    version: str
    budgets: list[Mapping[str, Any]]
    burst_budgets: list[Mapping[str, Any]]
    published_at: str = ""


def config_version(
    budgets: Sequence[Mapping[str, Any]], bursts: Sequence[Mapping[str, Any]]
) -> str:
    """A content hash: the same set of manifests always has the same version."""
    canonical = json.dumps([budgets, bursts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class PublishedConfigStore:
    def __init__(self, client: Redis | RedisCluster, keys: KeySchema | None = None) -> None:
        self.client = client
        self.keys = keys or KeySchema()

    @ledger_call
    async def publish(
        self,
        budgets: Sequence[Mapping[str, Any]],
        bursts: Sequence[Mapping[str, Any]],
        published_at: str,
    ) -> tuple[str, bool]:
        """Publish the manifests; returns (version, whether anything changed)."""
        version = config_version(budgets, bursts)
        current = await self.client.get(self.keys.config_version)
        if current is not None and _text(current) == version:
            return version, False
        document = json.dumps(
            {
                "version": version,
                "publishedAt": published_at,
                "budgets": list(budgets),
                "burstBudgets": list(bursts),
            },
            default=str,
        )
        if isinstance(self.client, RedisCluster):
            # Cluster: the document first, then the version that points readers to it
            # (a reader that sees the new version reads the new document); webhooks poll
            # the version, as pub/sub does not reach every node's subscribers.
            await self.client.set(self.keys.config_document, document)
            await self.client.set(self.keys.config_version, version)
            return version, True
        async with self.client.pipeline(transaction=True) as pipeline:
            pipeline.set(self.keys.config_document, document)
            pipeline.set(self.keys.config_version, version)
            pipeline.publish(self.keys.config_channel, version)
            await pipeline.execute()
        return version, True

    @ledger_call
    async def version(self) -> str | None:
        raw = await self.client.get(self.keys.config_version)
        return _text(raw) if raw is not None else None

    @ledger_call
    async def read(self) -> PublishedConfig | None:
        raw = await self.client.get(self.keys.config_document)
        if raw is None:
            return None
        document = json.loads(raw)
        return PublishedConfig(
            version=str(document["version"]),
            budgets=list(document.get("budgets", [])),
            burst_budgets=list(document.get("burstBudgets", [])),
            published_at=str(document.get("publishedAt", "")),
        )

    async def changes(self, check_seconds: float) -> AsyncIterator[None]:
        """Yields now, then whenever a new version may be there: on each announcement,
        and every ``check_seconds`` (an announcement missed while not subscribed only
        delays). Raises ``LedgerUnavailable`` when Redis fails; iterate again to resume.
        On Redis Cluster: every ``CLUSTER_POLL_SECONDS`` (at most ``check_seconds``)."""
        if isinstance(self.client, RedisCluster):
            while True:
                yield
                await asyncio.sleep(min(check_seconds, CLUSTER_POLL_SECONDS))
        try:
            async with self.client.pubsub() as pubsub:
                await pubsub.subscribe(self.keys.config_channel)
                yield  # anything published before the subscription
                while True:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=check_seconds)
                    yield
        except UNAVAILABLE as error:
            raise LedgerUnavailable.from_error(error) from error
