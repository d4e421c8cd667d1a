"""A decision's budgets, encoded once for ``reserve.lua`` and ``settle.lua``.

A plan is everything about a request's budgets that does not change from one
request to the next: counter and pool keys, limits, thresholds, history keys.
It is encoded (and its RESP bytes built) once, then reused by every request
with the same budgets until a period rolls over. Its ``content`` is stored in
Redis under a content-addressed key, so a reservation record only names it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from budget_guard.domain.decision import BudgetCharge
from budget_guard.store.keys import KeySchema
from budget_guard.store.scripts import bulk

# Separators inside Redis values. Keys and identity values never hold control
# characters (scope values and request identities are validated), so these are safe.
FIELD = "\t"
LINE = "\n"
SECTION = "\x1e"
LABEL = "\x1f"
POOL_ENTRY = "\x1d"
POOL_FIELD = "\x1c"

POOL_RETENTION = dt.timedelta(days=35)  # a burst pool's counter outlives its window, for review


def _ms(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)


class Attribution(NamedTuple):  # per request: a NamedTuple is cheap to build
    """Who and what a request's spend is reported under, in chargeback."""

    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None

    def field(self) -> str:
        return LABEL.join(
            value or "" for value in (self.tenant, self.feature, self.model, self.user)
        )


@dataclass
class EncodedPlan:
    """The encoded form of one plan; ``stored`` is what this process believes of Redis."""

    charges: Sequence[BudgetCharge]  # held so the cache key (its id) stays unique
    key: str
    content: str
    key_count: int
    line_count: int
    keys_blob: bytes  # plan key, counters, pools: bulk-encoded
    lines_blob: bytes  # one line per budget for reserve.lua: bulk-encoded
    counter_keys: tuple[str, ...] = ()  # one per budget, in order
    # per budget "limit\tfirst threshold\texpiry\tusers index\tdescription", for commit.lua
    counter_terms: tuple[str, ...] = ()
    stored: bool = field(default=False)


def _thresholds(charge: BudgetCharge) -> str:
    pairs = zip(charge.budget.thresholds, charge.threshold_amounts, strict=True)
    return ",".join(f"{percent}:{amount}" for percent, amount in pairs)


def encode_plan(
    charges: Sequence[BudgetCharge],
    keys: KeySchema,
    now: dt.datetime,
    attribution: Attribution | None,
) -> EncodedPlan:
    counter_keys: list[str] = []
    counter_terms: list[str] = []
    pool_keys: list[str] = []
    reserve_lines: list[str] = []
    settle_lines: list[str] = []
    history: list[str] = []
    for charge in charges:
        budget, window, subject = charge.budget, charge.window, charge.subject
        counter = keys.counter(budget, window, subject)
        counter_keys.append(counter)
        expiry = _ms(window.end + (window.end - window.start))
        users = keys.users(budget, window) if subject is not None else ""
        described = LABEL.join((budget.id, window.key, subject or "", _thresholds(charge)))
        reserve_pools, settle_pools = [], []
        for pool in charge.pools:
            pool_key = keys.pool(pool, budget)
            pool_keys.append(pool_key)
            cap = -1 if pool.max_request_micros is None else pool.max_request_micros
            pool_expiry = _ms(pool.valid_until + POOL_RETENTION)
            reserve_pools.append(f"{pool.amount_micros},{cap},{pool_expiry},{pool.id}")
            settle_pools.append(
                POOL_FIELD.join((pool_key, str(pool.amount_micros), str(pool_expiry)))
            )
        first_threshold = charge.threshold_amounts[0] if charge.threshold_amounts else 0
        counter_terms.append(
            FIELD.join(
                (str(charge.effective_limit), str(first_threshold), str(expiry), users, described)
            )
        )
        reserve_lines.append(
            FIELD.join(
                (
                    str(charge.effective_limit),
                    "1" if budget.enforces else "0",
                    str(expiry),
                    str(first_threshold),
                    users,
                    described,
                    ";".join(reserve_pools),
                )
            )
        )
        settle_lines.append(
            FIELD.join(
                (
                    counter,
                    str(charge.effective_limit),
                    str(expiry),
                    users,
                    described,
                    POOL_ENTRY.join(settle_pools),
                )
            )
        )
        history_key = keys.history(budget, now.astimezone(budget.zone).date())
        history.append(FIELD.join((history_key, "spent", "requests")))
        if subject is not None:
            history.append(FIELD.join((history_key, f"u:{subject}", f"n:{subject}")))
    if attribution is not None:
        attribution_key = keys.attribution(attribution.tenant, now.astimezone(dt.UTC).date())
        label = attribution.field()
        history.append(FIELD.join((attribution_key, f"s{LABEL}{label}", f"n{LABEL}{label}")))
    content = LINE.join(settle_lines) + SECTION + LINE.join(history)
    digest = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
    plan_key = keys.plan(digest)
    all_keys = [plan_key, *counter_keys, *pool_keys]
    return EncodedPlan(
        charges=charges,
        key=plan_key,
        content=content,
        key_count=len(all_keys),
        line_count=len(reserve_lines),
        keys_blob=b"".join(bulk(key) for key in all_keys),
        lines_blob=b"".join(bulk(line) for line in reserve_lines),
        counter_keys=tuple(counter_keys),
        counter_terms=tuple(counter_terms),
    )


class PlanCache:
    """Encoded plans by (plan tuple, quarter hour, attribution); bounded.

    Local days change on quarter hours in every modern zone, so history keys
    computed in one quarter hour hold for all of it.
    """

    QUARTER_HOUR_MS = 15 * 60 * 1000

    def __init__(self, keys: KeySchema, max_entries: int = 8192) -> None:
        self._keys = keys
        self._max_entries = max_entries
        self._plans: dict[tuple[int, int, Attribution | None], EncodedPlan] = {}

    def get(
        self,
        charges: Sequence[BudgetCharge],
        now: dt.datetime,
        now_ms: int,
        attribution: Attribution | None,
    ) -> EncodedPlan:
        cache_key = (id(charges), now_ms // self.QUARTER_HOUR_MS, attribution)
        plan = self._plans.get(cache_key)
        if plan is not None and plan.charges is charges:
            return plan
        plan = encode_plan(charges, self._keys, now, attribution)
        if len(self._plans) >= self._max_entries:
            self._plans.clear()
        self._plans[cache_key] = plan
        return plan
