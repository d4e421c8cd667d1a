"""How one webhook process reaches the ledger: two kinds of Redis connection, the
leases it holds, and the journal of what it let through while Redis was away.

- ``decisions``: reservations, pipelined on one connection (``store.channel``), whose
  health is judged by ``--ledger-timeout-ms`` (on Redis Cluster: in parts, one per
  slot, on a client with that socket timeout; see ``store.sharded``);
- ``operations``: everything else (commits, settlement, sweeps, reads, the config
  watch), on pooled connections with a socket timeout of their own.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from budget_guard.store.channel import ChannelSettings, LedgerChannel
from budget_guard.store.connect import ledger_client, redis_client
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.leases import LeaseSettings, LocalLeases
from budget_guard.store.ledger import Ledger, LedgerSettings
from budget_guard.store.scripts import RESERVE
from budget_guard.store.sharded import ClusterLink, ShardedLedger, ledger_for
from budget_guard.webhook.journal import DegradedJournal
from budget_guard.webhook.settings import WebhookSettings

log = logging.getLogger(__name__)

OPERATIONS_SOCKET_TIMEOUT_SECONDS = 5.0


def _ledger_settings(settings: WebhookSettings) -> LedgerSettings:
    retention = settings.retention
    return LedgerSettings(
        reservation_ttl=dt.timedelta(seconds=settings.reservations.ttl_seconds),
        expired_reservations=settings.reservations.expired,
        user_detail_retention=dt.timedelta(days=retention.user_detail_days),
        settled_stream_length=retention.settled_stream_length,
        settled_stream_age=dt.timedelta(hours=retention.settled_stream_age_hours),
    )


@dataclass
class LedgerAccess:
    channel: LedgerChannel | ClusterLink  # the decision path's link to Redis
    decisions: Ledger
    operations: Ledger
    leases: LocalLeases
    journal: DegradedJournal

    @classmethod
    def open(cls, settings: WebhookSettings) -> LedgerAccess:
        url = settings.redis.url
        ledger_timeout = settings.redis.timeout_ms / 1000
        ledger_settings = _ledger_settings(settings)
        operations_client = ledger_client(
            url,
            socket_connect_timeout=max(0.05, ledger_timeout),
            socket_timeout=OPERATIONS_SOCKET_TIMEOUT_SECONDS,
            max_connections=64,
        )
        operations = ledger_for(operations_client, ledger_settings)
        if isinstance(operations_client, RedisCluster):
            return cls._on_cluster(settings, ledger_settings, operations)
        channel_settings = ChannelSettings(stall_timeout_seconds=ledger_timeout)
        # No socket timeout and no retries on the decision client: the channel judges
        # Redis's health itself, and a retry would only hide an outage from it.
        decisions_client = redis_client(
            url,
            socket_connect_timeout=channel_settings.connect_timeout_seconds,
            socket_timeout=None,
            max_connections=8,
            retry=Retry(NoBackoff(), 0),
        )
        assert isinstance(decisions_client, Redis)  # the URL named no Cluster above
        channel = LedgerChannel(
            decisions_client.connection_pool, channel_settings, preload=[RESERVE.load_command]
        )
        decisions = Ledger(decisions_client, ledger_settings, channel=channel)
        leases = LocalLeases(decisions, LeaseSettings(enabled=settings.local_leases), operations)
        return cls(channel, decisions, operations, leases, DegradedJournal(operations))

    @classmethod
    def _on_cluster(
        cls, settings: WebhookSettings, ledger_settings: LedgerSettings, operations: Ledger
    ) -> LedgerAccess:
        """Redis Cluster: reservations in parts, one per slot (``store.sharded``), on a
        client whose socket timeout is the ledger timeout (there is no one connection to
        pipeline on and judge)."""
        ledger_timeout = settings.redis.timeout_ms / 1000
        client = ledger_client(
            settings.redis.url,
            socket_connect_timeout=max(0.05, ledger_timeout),
            socket_timeout=ledger_timeout,
            max_connections=settings.listen.max_inflight_decisions,  # per node
        )
        assert isinstance(client, RedisCluster)
        decisions = ShardedLedger(client, ledger_settings)
        leases = LocalLeases(decisions, LeaseSettings(enabled=settings.local_leases), operations)
        return cls(decisions.link, decisions, operations, leases, DegradedJournal(operations))

    @property
    def operations_client(self) -> Redis:
        return self.operations.client

    async def close(self, now: dt.datetime) -> None:
        """Commit local decisions, give every lease back, record what failed open, and
        close the connections: at shutdown."""
        try:
            await self.leases.close()
        except LedgerUnavailable as error:
            log.error("at shutdown, local decisions or leases could not be returned: %s", error)
        if len(self.journal):
            await self.journal.replay(now)  # last chance to record degraded spend
        await self.channel.aclose()
        await self.operations.client.aclose()
        await self.decisions.client.aclose()
