"""What the operator hears from the webhooks, and remembers having said.

The webhooks' scripts append threshold crossings, exhaustion and burst events to a
bounded stream. The operator reads it from a cursor kept in Redis (so a restart
neither replays nor skips), and marks each notice it turns into a Kubernetes Event
or an alert with a key of its own (so each is said once, across restarts and
replicas).
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
    async def done(self, notice: Notice) -> None:
        """Move the cursor past ``notice`` (of its stream, on Redis Cluster)."""
        await self.client.set(self._shard_cursor(notice.stream or self.keys.events), notice.id)

    @ledger_call
    async def first_time(self, marker: str, ttl: dt.timedelta) -> bool:
        """True exactly once per ``marker`` (until it expires): say it now."""
        key = f"{self.keys.prefix}:{GLOBAL_TAG}:said:{marker}"
        return bool(await self.client.set(key, "1", nx=True, px=int(ttl.total_seconds() * 1000)))

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
