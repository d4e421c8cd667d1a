"""Where a per-user template's per-user spend survives Redis losing it: a checkpoint
ConfigMap per budget, rewritten by the status sync when the spend changed, and read
back to restore the users' counters after a flush. Burst pools restore from their
BurstBudget's status (one pool, a few fields: the status is enough).

The checkpoint is ``<budget>.spend`` in the budget's namespace, owned by the budget
(deleted with it): ``data`` says the budget, the period and how many users it holds;
``binaryData["spend.tsv.gz"]`` is ``user<TAB>spent<TAB>threshold`` lines, gzipped.
It never goes down: each write keeps, for every user, the larger of what Redis says
and what the last checkpoint of the period said, so a sync that runs after a flush and
before the restore cannot erase the truth. A ConfigMap holds at most 1 MiB; past
``CHECKPOINT_BYTES`` the users who spent least are left out (and the log says how
many): docs/operator.md has the measured number of users that fit.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from redis.asyncio import Redis

from budget_guard.domain.budget import Budget, BurstPool
from budget_guard.domain.instants import rfc3339, unix_ms
from budget_guard.domain.money import format_usd, parse_usd
from budget_guard.operator.compile import Manifest
from budget_guard.operator.events import Announcer
from budget_guard.operator.kube import KubeApi
from budget_guard.store.keys import KeySchema
from budget_guard.store.usage import BudgetUsage, PoolUsage
from budget_guard.store.user_spend import (
    UserSpend,
    read_user_spend,
    restore_pool,
    restore_user_spend,
)

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 900_000  # of gzipped lines, base64 included: under a ConfigMap's 1 MiB
DATA_KEY = "spend.tsv.gz"
MANAGED_BY = "llm-budget-guard"
_NAME_LIMIT = 253


@dataclass(frozen=True)
class Checkpoint:
    period: str
    users: dict[str, UserSpend] = field(default_factory=dict)

    def merged(self, current: Mapping[str, UserSpend]) -> Checkpoint:
        """Each user's larger spend and threshold, of this checkpoint and ``current``."""
        users = dict(self.users)
        for user, spend in current.items():
            known = users.get(user)
            if known is None or known.spent < spend.spent or known.reached < spend.reached:
                users[user] = UserSpend(
                    max(spend.spent, known.spent if known else 0),
                    max(spend.reached, known.reached if known else 0),
                )
        return Checkpoint(self.period, users)


def checkpoint_name(budget_name: str) -> str:
    name = f"{budget_name}.spend"
    if len(name) <= _NAME_LIMIT:
        return name
    digest = hashlib.sha256(budget_name.encode()).hexdigest()[:16]
    return f"{budget_name[: _NAME_LIMIT - 23]}.{digest}.spend"


def encode(users: Mapping[str, UserSpend], limit: int = CHECKPOINT_BYTES) -> tuple[str, int]:
    """The base64 of the gzipped lines, and how many users it holds: all of them if
    they fit in ``limit`` bytes, else (about) as many of those who spent most as fit."""
    ranked = sorted(users.items(), key=lambda item: (-item[1].spent, item[0]))

    def packed(count: int) -> str:
        lines = "".join(f"{user}\t{s.spent}\t{s.reached}\n" for user, s in ranked[:count])
        return base64.b64encode(gzip.compress(lines.encode(), mtime=0)).decode()

    text = packed(len(ranked))
    count = len(ranked)
    while len(text) > limit:  # shrink in proportion, a little more each time: few tries
        count = min(count - 1, int(count * limit / len(text) * 0.99))
        text = packed(count)
    return text, count


def decode(text: str) -> dict[str, UserSpend]:
    users = {}
    for line in gzip.decompress(base64.b64decode(text)).decode().splitlines():
        user, spent, reached = line.rsplit("\t", 2)
        users[user] = UserSpend(int(spent), int(reached))
    return users


class SpendCheckpoints:
    def __init__(self, redis: Redis, keys: KeySchema, kube: KubeApi, announcer: Announcer) -> None:
        self._redis = redis
        self._keys = keys
        self._kube = kube
        self._announcer = announcer
        self._known: dict[str, Checkpoint] = {}  # by budget id: what the ConfigMap holds

    async def keep_users(self, budget: Budget, manifest: Manifest, usage: BudgetUsage) -> None:
        """Restore the users Redis lost from the checkpoint, then checkpoint the users."""
        window = usage.window
        checkpoint = await self._load(budget, manifest)
        if checkpoint.period != window.key:
            checkpoint = Checkpoint(window.key)
        elif usage.users_tracked < len(checkpoint.users):
            await self._restore_users(budget, manifest, usage, checkpoint)
        current = await read_user_spend(self._redis, budget, window, self._keys)
        wanted = checkpoint.merged(current)
        if wanted != self._known.get(budget.id):
            await self._save(budget, manifest, wanted)

    async def _restore_users(
        self, budget: Budget, manifest: Manifest, usage: BudgetUsage, checkpoint: Checkpoint
    ) -> None:
        raised, added = await restore_user_spend(
            self._redis, budget, usage.window, checkpoint.users, self._keys
        )
        if raised == 0:
            return
        log.warning(
            "restored %s micro-USD of lost spend for %d users of %s", added, raised, budget.id
        )
        await self._announcer.say_restored(
            manifest,
            budget.id,
            f"the ledger had lost the spend of {raised} of {len(checkpoint.users)} users "
            f"this period: restored ${format_usd(added)} from the checkpoint "
            f"ConfigMap {checkpoint_name(str(manifest['metadata']['name']))}",
            f"restored-users:{usage.window.key}:{usage.users_tracked}:{added}",
        )

    async def _load(self, budget: Budget, manifest: Manifest) -> Checkpoint:
        known = self._known.get(budget.id)
        if known is not None:
            return known
        metadata = manifest.get("metadata", {})
        found = await self._kube.read_config_map(
            str(metadata.get("namespace")), checkpoint_name(str(metadata.get("name")))
        )
        if found is None or found.get("data", {}).get("budget") != budget.id:
            checkpoint = Checkpoint("")
        else:
            text = (found.get("binaryData") or {}).get(DATA_KEY, "")
            users = decode(text) if text else {}
            checkpoint = Checkpoint(str(found["data"].get("periodKey", "")), users)
        self._known[budget.id] = checkpoint
        return checkpoint

    async def _save(self, budget: Budget, manifest: Manifest, checkpoint: Checkpoint) -> None:
        metadata = manifest.get("metadata", {})
        text, kept = encode(checkpoint.users)
        if kept < len(checkpoint.users):
            log.warning(
                "the checkpoint of %s holds %d of its %d users (the ConfigMap is full): the "
                "others' spend would not be restored after a flush",
                budget.id,
                kept,
                len(checkpoint.users),
            )
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": checkpoint_name(str(metadata.get("name"))),
                "namespace": metadata.get("namespace"),
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
                "ownerReferences": [
                    {
                        "apiVersion": manifest.get("apiVersion"),
                        "kind": manifest.get("kind"),
                        "name": metadata.get("name"),
                        "uid": metadata.get("uid"),
                    }
                ],
            },
            "data": {
                "budget": budget.id,
                "periodKey": checkpoint.period,
                "users": str(kept),
                "writtenAt": rfc3339(dt.datetime.now(dt.UTC)),
            },
            "binaryData": {DATA_KEY: text},
        }
        await self._kube.write_config_map(str(metadata.get("namespace")), body)
        self._known[budget.id] = checkpoint

    async def keep_pool(
        self,
        pool: BurstPool,
        budget: Budget,
        manifest: Manifest,
        usage: PoolUsage,
        now: dt.datetime,
    ) -> PoolUsage:
        """A pool counter below what its BurstBudget's status recorded lost data: put it back."""
        status = manifest.get("status") or {}
        try:
            recorded = parse_usd(str(status.get("spent", "0")), "status.spent", allow_zero=True)
        except ValueError:
            return usage
        if usage.used >= recorded:
            return usage
        phase = str(status.get("phase", ""))
        now_ms = unix_ms(now)
        activated = usage.activated_at_ms or (now_ms if recorded > 0 else 0)
        exhausted = usage.exhausted_at_ms or (now_ms if phase == "Exhausted" else 0)
        requests = max(usage.requests, int(status.get("requests") or 0))
        added = await restore_pool(
            self._redis, pool, budget, recorded, requests, activated, exhausted, self._keys
        )
        if added <= 0:
            return usage
        log.warning("restored %s micro-USD of lost usage on burst pool %s", added, pool.id)
        await self._announcer.say_restored(
            manifest,
            pool.id,
            f"the ledger held ${format_usd(usage.used)} drawn from this pool, below the "
            f"${format_usd(recorded)} last recorded: restored ${format_usd(added)}",
            f"restored:{usage.used}:{recorded}",
        )
        return replace(
            usage,
            used=recorded,
            spent=usage.spent + added,
            requests=requests,
            activated_at_ms=activated or None,
            exhausted_at_ms=exhausted or None,
        )
