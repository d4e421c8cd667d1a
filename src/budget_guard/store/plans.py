"""A decision's budgets, encoded once for the Lua scripts: the one wire format.

A plan is everything about a request's budgets that does not change from one
request to the next: counter and pool keys, limits, thresholds, history keys. It is
encoded (and its RESP bytes built) once, then reused by every request with the same
budgets until a period rolls over. Its ``content`` is stored in Redis under a
content-addressed key, so that a reservation record only names it.

**The budget record** is the one format every script reads about a budget
(``reserve.lua`` receives the records as arguments, ``settle.lua`` reads them from
the stored plan, ``commit.lua`` receives them after an amount). One line per budget,
fields joined by ``FIELD`` (a tab); ``parse_budget`` in ``lua/_shared.lua`` is its
one reader, ``budget_record`` below its one writer:

| # | field | meaning |
|---|---|---|
| 1 | counter | the counter hash of this budget, period (and user, for templates) |
| 2 | limit | effective limit, micro-USD (limit x seasonal multiplier) |
| 3 | enforce | ``1`` Enforce, ``0`` Observe |
| 4 | expiry | when the counter may go (unix ms): one period after the period ends |
| 5 | first | the first soft threshold, micro-USD (``0`` when none) |
| 6 | users | per-user templates: the period's users index (sorted set), else empty |
| 7 | described | ``budget\\x1fperiod\\x1fsubject\\x1fthresholds`` (``70:7000000,...``): what a |
|   |           | threshold event says |
| 8 | pools | active burst pools, ``POOL_ENTRY``-joined; each ``key\\x1camount\\x1ccap\\x1c`` |
|   |       | ``expiry\\x1cid`` (cap ``-1``: no per-request cap) |

To add a field: append it here (writer), in ``parse_budget`` (reader), and to this
table; the scripts that need it read it from the parsed table.

A plan's content is the records joined by ``LINE``, then ``SECTION``, then one
history line per hash to write at settlement (``key\\tspent-field\\tcount-field``, and
``\\tseconds`` when the hash has a retention of its own; see ``history_lines``), then
``SECTION`` and one hourly line per budget (``key-prefix\\tseconds``: settle.lua adds
the UTC day and hour of the settlement, so that a plan stays the same all day).

**The plan's user.** A plan is shared by every user of the same budgets: wherever the
request's user would be written (a template's counter key and description, the
per-user history fields, the attribution by user), the stored content holds ``USER``
(``\\x1a``) instead, and the reservation record names the user once (its sixth
field). ``read_plan`` in ``lua/_shared.lua`` fills it in when a script reads a stored
plan; the records sent with a call (``EncodedPlan.records``) are already filled in.
So a new user adds a reservation record's worth of bytes, not a plan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from budget_guard.domain.decision import BudgetCharge
from budget_guard.domain.instants import unix_ms
from budget_guard.domain.resolution import Attribution
from budget_guard.store.keys import KeySchema, hash_tag
from budget_guard.store.scripts import bulk

# Separators inside Redis values. Keys and identity values never hold control
# characters (scope values and request identities are validated), so these are safe.
FIELD = "\t"
LINE = "\n"
SECTION = "\x1e"
LABEL = "\x1f"
POOL_ENTRY = "\x1d"
POOL_FIELD = "\x1c"
USER = "\x1a"  # in a stored plan: the user its reservation record names

POOL_RETENTION = dt.timedelta(days=35)  # a burst pool's counter outlives its window, for review


def attribution_label(attribution: Attribution) -> str:
    """How an attribution is written in Redis (history fields, settlement answers)."""
    return LABEL.join(
        value or ""
        for value in (attribution.tenant, attribution.feature, attribution.model, attribution.user)
    )


def parse_attribution_label(label: str) -> Attribution:
    tenant, feature, model, user = (part or None for part in label.split(LABEL))
    return Attribution(tenant=tenant, user=user, feature=feature, model=model)


@dataclass
class EncodedPlan:
    """The encoded form of one plan; ``stored`` is what this process believes of Redis."""

    charges: Sequence[BudgetCharge]  # held so the cache key (its id) stays unique
    key: str
    content: str  # shared by every user: USER stands for ``user``
    counter_keys: tuple[str, ...]  # one per budget, in order
    records: tuple[str, ...]  # one budget record per budget, in order, USER filled in
    pool_keys: tuple[str, ...]
    user: str = ""  # what USER stands for in ``content`` ("": the plan has no USER)
    keys_blob: bytes = b""  # plan key, counters, pools: bulk-encoded
    records_blob: bytes = b""  # the user, then the records, bulk-encoded
    stored: bool = field(default=False)
    # Redis Cluster: the plan split per hash tag (see store.sharded); empty elsewhere.
    parts: tuple[PlanPart, ...] = ()

    def __post_init__(self) -> None:
        all_keys = (self.key, *self.counter_keys, *self.pool_keys)
        self.keys_blob = b"".join(bulk(key) for key in all_keys)
        self.records_blob = bulk(self.user) + b"".join(bulk(record) for record in self.records)

    @property
    def key_count(self) -> int:
        return 1 + len(self.counter_keys) + len(self.pool_keys)


@dataclass
class PlanPart:
    """The charges of a request that share one hash tag, and their own plan."""

    tag: str
    positions: tuple[int, ...]  # of the charges, in the request's order
    plan: EncodedPlan


def _thresholds(charge: BudgetCharge) -> str:
    pairs = zip(charge.budget.thresholds, charge.threshold_amounts, strict=True)
    return ",".join(f"{percent}:{amount}" for percent, amount in pairs)


def plan_user(charges: Sequence[BudgetCharge], attribution: Attribution | None) -> str:
    """The user a plan's ``USER`` stands for: the one per-user templates charge, else the
    attribution's ("" when there is none)."""
    for charge in charges:
        if charge.subject:
            return charge.subject
    return (attribution.user if attribution is not None else None) or ""


def _as_user(value: str | None, user: str) -> str | None:
    """``value``, written as ``USER`` when it is the plan's user."""
    return USER if user and value == user else value


def budget_record(
    charge: BudgetCharge, keys: KeySchema, user: str = ""
) -> tuple[str, tuple[str, ...]]:
    """The budget record of ``charge`` (see the table above), ``user`` written as
    ``USER``, and its pool keys."""
    budget, window, subject = charge.budget, charge.window, _as_user(charge.subject, user)
    pools: list[str] = []
    pool_keys: list[str] = []
    for pool in charge.pools:
        pool_key = keys.pool(pool, budget)
        cap = -1 if pool.max_request_micros is None else pool.max_request_micros
        expiry = unix_ms(pool.valid_until + POOL_RETENTION)
        entry = (pool_key, str(pool.amount_micros), str(cap), str(expiry), pool.id)
        pools.append(POOL_FIELD.join(entry))
        pool_keys.append(pool_key)
    record = FIELD.join(
        (
            keys.counter(budget, window, subject),
            str(charge.effective_limit),
            "1" if budget.enforces else "0",
            str(unix_ms(window.end + (window.end - window.start))),
            str(charge.threshold_amounts[0] if charge.threshold_amounts else 0),
            keys.users(budget, window) if subject is not None else "",
            LABEL.join((budget.id, window.key, subject or "", _thresholds(charge))),
            POOL_ENTRY.join(pools),
        )
    )
    return record, tuple(pool_keys)


@dataclass(frozen=True)
class DetailRetention:
    """How long the detail that grows with users or hours is kept (the daily aggregates
    keep the ledger's history retention): per-user spend, and spend per hour."""

    users: dt.timedelta = dt.timedelta(days=35)
    hourly: dt.timedelta = dt.timedelta(days=9)

    def seconds(self, kept: dt.timedelta) -> str:
        return str(int(kept.total_seconds()))


def history_lines(
    charges: Sequence[BudgetCharge],
    keys: KeySchema,
    now: dt.datetime,
    attribution: Attribution | None,
    retention: DetailRetention,
    user: str = "",
) -> list[str]:
    """The hashes a settlement adds to, besides the counters. Kept long (the ledger's
    history retention), and independent of how many users there are: per budget the
    local day's spend, per tenant/feature/model the UTC day's, and which tenants spent
    that day. Kept for the per-user window: per-user spend (templates' users, and the
    attribution by user). ``user`` is written as ``USER``."""
    users = retention.seconds(retention.users)
    utc = now.astimezone(dt.UTC)
    lines = []
    for charge in charges:
        budget, subject = charge.budget, _as_user(charge.subject, user)
        local_day = now.astimezone(budget.zone).date()
        lines.append(FIELD.join((keys.history(budget, local_day), "spent", "requests")))
        if subject is not None:
            user_key = keys.user_history(budget, local_day)
            lines.append(FIELD.join((user_key, f"u:{subject}", f"n:{subject}", users)))
    if attribution is not None:
        tenant, day = attribution.tenant, utc.date()
        index = keys.attribution_index(day)
        lines.append(FIELD.join((index, f"s:{tenant or ''}", f"n:{tenant or ''}")))
        aggregate = attribution_label(attribution._replace(user=None))
        lines.append(
            FIELD.join(
                (keys.attribution(tenant, day), f"s{LABEL}{aggregate}", f"n{LABEL}{aggregate}")
            )
        )
        # Last: settle.lua answers the label of the last "s<LABEL>" line it wrote.
        label = attribution_label(attribution._replace(user=_as_user(attribution.user, user)))
        user_key = keys.user_attribution(tenant, day)
        lines.append(FIELD.join((user_key, f"s{LABEL}{label}", f"n{LABEL}{label}", users)))
    return lines


def hourly_lines(
    charges: Sequence[BudgetCharge], keys: KeySchema, retention: DetailRetention
) -> list[str]:
    """Per budget, the spend of each UTC hour, kept a week and a bit (the anomaly
    baseline): key prefixes only, the hour is the settlement's."""
    kept = retention.seconds(retention.hourly)
    return [FIELD.join((keys.hourly_prefix(charge.budget), kept)) for charge in charges]


def encode_plan(
    charges: Sequence[BudgetCharge],
    keys: KeySchema,
    now: dt.datetime,
    attribution: Attribution | None,
    retention: DetailRetention | None = None,
    *,
    tag: str | None = None,
    linked: tuple[str, str] = ("", ""),
) -> EncodedPlan:
    """``tag`` (Redis Cluster): the plan of one hash tag's part of a request, holding
    only the history lines of that tag; ``linked``: the other parts' tags and budget
    ids (comma-joined), written in a fourth and fifth section, for the part settlement
    starts from (``store.sharded``), with the request's attribution label in a sixth
    (its history lines, where the label is otherwise read from, are the tenant's)."""
    user = plan_user(charges, attribution)
    records: list[str] = []
    pool_keys: list[str] = []
    for charge in charges:
        record, pools = budget_record(charge, keys, user)
        records.append(record)
        pool_keys.extend(pools)
    retention = retention or DetailRetention()
    history = history_lines(charges, keys, now, attribution, retention, user)
    if tag is not None:
        history = [line for line in history if hash_tag(line) == tag]
    hourly = hourly_lines(charges, keys, retention)
    sections = [LINE.join(records), LINE.join(history), LINE.join(hourly)]
    if any(linked):
        sections += [*linked, _label_of(attribution, user)]
    content = SECTION.join(sections)
    digest = hashlib.blake2b(content.encode(), digest_size=12).hexdigest()
    return EncodedPlan(
        charges=charges,
        key=keys.plan(digest) if tag is None else keys.plan_in(tag, digest),
        content=content,
        counter_keys=tuple(keys.counter(c.budget, c.window, c.subject) for c in charges),
        records=tuple(record.replace(USER, user) for record in records),
        pool_keys=tuple(pool_keys),
        user=user,
    )


def _label_of(attribution: Attribution | None, user: str) -> str:
    """The attribution label as a plan's history lines write it (``USER`` for its user)."""
    if attribution is None:
        return ""
    return attribution_label(attribution._replace(user=_as_user(attribution.user, user)))


def history_tags(
    charges: Sequence[BudgetCharge],
    keys: KeySchema,
    now: dt.datetime,
    attribution: Attribution | None,
    retention: DetailRetention | None = None,
) -> set[str]:
    """The hash tags a settlement of these charges writes history in."""
    lines = history_lines(charges, keys, now, attribution, retention or DetailRetention())
    return {hash_tag(line) for line in lines}


class PlanCache:
    """Encoded plans by (plan tuple, quarter hour, attribution); bounded.

    Local days change on quarter hours in every modern zone, so history keys
    computed in one quarter hour hold for all of it.
    """

    QUARTER_HOUR_MS = 15 * 60 * 1000

    def __init__(
        self, keys: KeySchema, max_entries: int = 8192, retention: DetailRetention | None = None
    ) -> None:
        self._keys = keys
        self._retention = retention or DetailRetention()
        self._max_entries = max_entries
        self._plans: dict[tuple[int, int, Attribution | None], EncodedPlan] = {}
        self._by_key: dict[str, EncodedPlan] = {}  # the latest plan of each stored key

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
        plan = encode_plan(charges, self._keys, now, attribution, self._retention)
        if len(self._plans) >= self._max_entries:
            self._plans.clear()
            self._by_key.clear()
        # Another user's plan may have stored the same content already: no need to send it
        # (if Redis lost it since, reserve.lua asks for it).
        shared = self._by_key.get(plan.key)
        plan.stored = shared is not None and shared.stored
        self._plans[cache_key] = self._by_key[plan.key] = plan
        return plan
