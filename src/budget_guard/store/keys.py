"""Every Redis key of the project, in one place.

Keys carry a Redis Cluster hash tag: ``{t:<tenant>}`` for what belongs to one
tenant, ``{global}`` for budgets without a tenant. Everything one request touches
for one tenant's budgets therefore shares a slot. Single-instance Redis and Sentinel
keep every request's records in ``{global}`` and run every script fully atomically;
on Redis Cluster a request has a part per hash tag (the ``*_in(tag, ...)`` keys; see
``store.sharded`` and ``docs/concepts.md``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.periods import PeriodWindow

GLOBAL_TAG = "{global}"


def tenant_tag(tenant: str | None) -> str:
    return f"{{t:{tenant}}}" if tenant else GLOBAL_TAG


def hash_tag(key: str) -> str:
    """The hash tag a key of this schema carries (``{t:acme}``, ``{global}``)."""
    start = key.index("{")
    return key[start : key.index("}", start) + 1]


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "bg"

    def counter(self, budget: Budget, window: PeriodWindow, subject: str | None) -> str:
        """Spend of one budget in one period (and one user, for templates)."""
        return self.counter_key(budget, window.key, subject)

    def counter_key(self, budget: Budget, period_key: str, subject: str | None) -> str:
        key = f"{self.prefix}:{tenant_tag(budget.scope.tenant)}:c:{budget.id}:{period_key}"
        return f"{key}:u:{subject}" if subject is not None else key

    def users(self, budget: Budget, window: PeriodWindow) -> str:
        """A per-user template's users by usage in one period (sorted set), for status."""
        return f"{self.prefix}:{tenant_tag(budget.scope.tenant)}:c:{budget.id}:{window.key}:users"

    def pool(self, pool: BurstPool, budget: Budget) -> str:
        """What a burst pool has given out, over its whole window."""
        return f"{self.prefix}:{tenant_tag(budget.scope.tenant)}:p:{pool.id}"

    def history(self, budget: Budget, day: dt.date) -> str:
        """Settled spend of one budget on one local day, kept for reports."""
        return f"{self.prefix}:{tenant_tag(budget.scope.tenant)}:h:{budget.id}:{day.isoformat()}"

    def user_history(self, budget: Budget, day: dt.date) -> str:
        """Settled spend of a per-user template's users on one local day (the per-user
        window only: it grows with users x days)."""
        return f"{self.prefix}:{tenant_tag(budget.scope.tenant)}:hu:{budget.id}:{day.isoformat()}"

    def hourly(self, budget: Budget, day: dt.date) -> str:
        """Settled spend of one budget per UTC hour of one UTC day (fields ``s:HH``), kept
        a little over a week: the anomaly baseline."""
        return self.hourly_prefix(budget) + day.isoformat()

    def hourly_prefix(self, budget: Budget) -> str:
        """``hourly`` without its day: settle.lua adds the day of the settlement."""
        return f"{self.prefix}:{tenant_tag(budget.scope.tenant)}:hh:{budget.id}:"

    def attribution(self, tenant: str | None, day: dt.date) -> str:
        """Settled spend by tenant, feature and model on one UTC day (chargeback; kept
        as long as the daily history)."""
        return f"{self.prefix}:{tenant_tag(tenant)}:a:{day.isoformat()}"

    def user_attribution(self, tenant: str | None, day: dt.date) -> str:
        """Settled spend by tenant, feature, model and user on one UTC day (the per-user
        window only)."""
        return f"{self.prefix}:{tenant_tag(tenant)}:ua:{day.isoformat()}"

    def attribution_index(self, day: dt.date) -> str:
        """Settled spend per tenant on one UTC day (fields ``s:<tenant>``): which tenants'
        attribution hashes exist, without scanning."""
        return f"{self.prefix}:{GLOBAL_TAG}:at:{day.isoformat()}"

    @property
    def settled(self) -> str:
        """Settled requests, one entry each (a bounded stream, for audits of recent spend)."""
        return f"{self.prefix}:{GLOBAL_TAG}:settled"

    def reservation(self, request_id: str) -> str:
        """What one request reserved, until it is settled (and a while after)."""
        return self.reservation_in(GLOBAL_TAG, request_id)

    def reservation_in(self, tag: str, request_id: str) -> str:
        """On Redis Cluster a request has a record in each slot it reserved in."""
        return f"{self.prefix}:{tag}:r:{request_id}"

    def request_id_of(self, reservation_key: str) -> str:
        return reservation_key.removeprefix(f"{self.prefix}:{hash_tag(reservation_key)}:r:")

    def commit_marker(self, batch_id: str) -> str:
        """Marks a batch of local decisions as committed, so a retry applies it once."""
        return self.commit_marker_in(GLOBAL_TAG, batch_id)

    def commit_marker_in(self, tag: str, batch_id: str) -> str:
        return f"{self.prefix}:{tag}:commit:{batch_id}"

    def lease_return(self, marker: str) -> str:
        """Marks lease room given back, so that a return retried after a lost answer
        applies once (the marker of a reservation's returns is its request id)."""
        return self.lease_return_in(GLOBAL_TAG, marker)

    def lease_return_in(self, tag: str, marker: str) -> str:
        return f"{self.prefix}:{tag}:returned:{marker}"

    def plan(self, digest: str) -> str:
        """What settling needs of a set of budgets, shared by many reservations."""
        return self.plan_in(GLOBAL_TAG, digest)

    def plan_in(self, tag: str, digest: str) -> str:
        return f"{self.prefix}:{tag}:plan:{digest}"

    @property
    def pending(self) -> str:
        """Unsettled reservations by settle deadline, for the expiry sweeper."""
        return self.pending_in(GLOBAL_TAG)

    def pending_in(self, tag: str) -> str:
        return f"{self.prefix}:{tag}:pending"

    @property
    def shards(self) -> str:
        """Redis Cluster: the tenant hash tags that have reservation records, pending
        indexes and event streams of their own (a set), for the sweeper and the operator."""
        return f"{self.prefix}:{GLOBAL_TAG}:shards"

    @property
    def config_document(self) -> str:
        """The published configuration (every accepted budget), as JSON."""
        return f"{self.prefix}:{GLOBAL_TAG}:config:document"

    @property
    def config_version(self) -> str:
        return f"{self.prefix}:{GLOBAL_TAG}:config:version"

    @property
    def config_channel(self) -> str:
        """Pub/sub channel announcing each new configuration version."""
        return f"{self.prefix}:config"

    @property
    def events(self) -> str:
        """Threshold crossings, exhaustion and burst events, for the operator."""
        return self.events_in(GLOBAL_TAG)

    def events_in(self, tag: str) -> str:
        return f"{self.prefix}:{tag}:events"
