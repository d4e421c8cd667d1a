"""What the operator hears from the webhooks, and remembers having said.

The webhooks' scripts append threshold crossings, exhaustion and burst events to a
bounded stream. The operator reads it from a cursor kept in Redis (so a restart
neither replays nor skips), and marks each notice it turns into a Kubernetes Event
or an alert with a key of its own (so each is said once, across restarts and
replicas). Alerts wait in an outbox (a hash: Event name -> alert) from the moment
their notice is acknowledged until they are delivered, so a restart neither drops
nor repeats them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster

from budget_guard.domain.budget import Budget
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import GLOBAL_TAG, KeySchema
from budget_guard.store.scripts import RESTORE

_CURSOR_START = "0-0"


@dataclass(frozen=True)
class Notice:
    """One entry of the event stream."""

    id: str
    kind: str  # soft_limit, exhausted, burst_activated, burst_exhausted
    budget: str  # namespace/name
    period: str = ""
    subject: str = ""
    threshold: int = 0
    used: int = 0
    limit: int = 0
    pool: str = ""
    stream: str = ""  # Redis Cluster: the stream it came from (one per hash tag)

    @classmethod
    def parse(cls, entry_id: str, fields: Mapping[str, str], stream: str = "") -> Notice:
        return cls(
            stream=stream,
            id=entry_id,
            kind=fields.get("kind", ""),
            budget=fields.get("budget", ""),
            period=fields.get("period", ""),
            subject=fields.get("subject", ""),
            threshold=int(fields.get("threshold") or 0),
            used=int(fields.get("used") or 0),
            limit=int(fields.get("limit") or 0),
            pool=fields.get("pool", ""),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Notices:
    def __init__(self, client: Redis | RedisCluster, keys: KeySchema | None = None) -> None:
        self.client = client
        self.keys = keys or KeySchema()
        self._cursor_key = f"{self.keys.prefix}:{GLOBAL_TAG}:operator:cursor"
        self._outbox_key = f"{self.keys.prefix}:{GLOBAL_TAG}:operator:outbox"

    @ledger_call
    async def read(self, block_ms: int = 1000, count: int = 500) -> list[Notice]:
        """Notices after the stored cursor, waiting up to ``block_ms`` for some."""
        if isinstance(self.client, RedisCluster):
            return await self._read_every_shard(block_ms, count)
        cursor = await self.client.get(self._cursor_key)
        start = _text(cursor) if cursor is not None else _CURSOR_START
        answer: Any = await self.client.xread(
            {self.keys.events: start}, count=count, block=block_ms
        )
        notices = []
        for _, entries in answer or []:
            for entry_id, fields in entries:
                decoded = {_text(k): _text(v) for k, v in fields.items()}
                notices.append(Notice.parse(_text(entry_id), decoded))
        return notices

    async def _read_every_shard(self, block_ms: int, count: int) -> list[Notice]:
        """Redis Cluster: each hash tag's slot has its stream (``store.sharded``), each
        read from a cursor of its own; no blocking read spans slots, so this polls."""
        cluster = cast("RedisCluster", self.client)
        members = await cluster.smembers(self.keys.shards)
        tags = [GLOBAL_TAG, *sorted(_text(member) for member in members)]
        notices: list[Notice] = []
        for tag in tags:
            stream = self.keys.events_in(tag)
            cursor = await cluster.get(self._shard_cursor(stream))
            start = _text(cursor) if cursor is not None else _CURSOR_START
            answer: Any = await cluster.xread({stream: start}, count=count)
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    decoded = {_text(k): _text(v) for k, v in fields.items()}
                    notices.append(Notice.parse(_text(entry_id), decoded, stream))
        if not notices:
            await asyncio.sleep(min(block_ms, 250) / 1000)
        return notices

    def _shard_cursor(self, stream: str) -> str:
        if stream == self.keys.events:
            return self._cursor_key
        return f"{self.keys.prefix}:{GLOBAL_TAG}:operator:cursor:{stream}"

    @ledger_call
    async def said(self, marker: str) -> bool:
        """Was the notice ``marker`` acknowledged before (and not yet forgotten)?"""
        return bool(await self.client.exists(self._marker_key(marker)))

    @ledger_call
    async def acknowledge(
        self,
        marker: str | None = None,
        ttl: dt.timedelta = dt.timedelta(days=400),
        *,
        cursor: Notice | None = None,
        outbox: tuple[str, str] | None = None,
    ) -> None:
        """In one transaction: remember ``marker`` for ``ttl``, move the cursor (of its
        stream, on Redis Cluster) past the notice ``cursor``, queue ``outbox`` (name,
        alert) for delivery. Every key is ``{global}``'s, so this is one slot's
        transaction on Cluster too."""
        async with self.client.pipeline(transaction=True) as pipeline:
            if marker is not None:
                pipeline.set(self._marker_key(marker), "1", px=int(ttl.total_seconds() * 1000))
            if cursor is not None:
                stream = cursor.stream or self.keys.events
                pipeline.set(self._shard_cursor(stream), cursor.id)
            if outbox is not None:
                pipeline.hset(self._outbox_key, outbox[0], outbox[1])
            await pipeline.execute()

    @ledger_call
    async def outbox(self) -> dict[str, str]:
        """Alerts acknowledged and not yet delivered: Event name -> alert (JSON)."""
        entries = await self.client.hgetall(self._outbox_key)
        return {_text(name): _text(alert) for name, alert in entries.items()}

    @ledger_call
    async def delivered(self, name: str) -> None:
        """Take a delivered (or given up) alert out of the outbox."""
        await self.client.hdel(self._outbox_key, name)

    async def done(self, notice: Notice) -> None:
        """Move the cursor (of its stream) past ``notice``, and nothing else."""
        await self.acknowledge(cursor=notice)

    def _marker_key(self, marker: str) -> str:
        return f"{self.keys.prefix}:{GLOBAL_TAG}:said:{marker}"

    @ledger_call
    async def restore(
        self,
        budget: Budget,
        window_key: str,
        recorded_spent: int,
        expiry_ms: int,
        reached_percent: int = 0,
    ) -> int:
        """Raise a lost counter back to the spend its status recorded; returns the gap.

        ``reached_percent`` is the highest crossing already announced, so it is not
        announced again.
        """
        key = self.keys.counter_key(budget, window_key, None)
        args = [recorded_spent, expiry_ms, reached_percent]
        return int(await RESTORE.run(self.client, [key], args))
