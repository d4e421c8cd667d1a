"""Reading the ledger's history for reports: daily and hourly spend per budget, the
attribution by tenant, feature, model (and user, within the per-user window), and the
stream of settled requests.

Every read is pipelined in chunks, so a report over a thousand budgets and thirteen
months costs a few round trips per chunk, not one per day. ``DailySpend`` keeps the
days that can no longer change (settlements land on the day a request was reserved:
at most a day late) so that a process reading every few minutes reads only the last
days again.
"""

from __future__ import annotations

import datetime as dt
import functools
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

from budget_guard.domain.anomaly import HOURLY_RETENTION
from budget_guard.domain.budget import Budget
from budget_guard.domain.review import review_days
from budget_guard.domain.spend import SpendCell, SpendRow, SpendTotals
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import KeySchema
from budget_guard.store.plans import LABEL
from budget_guard.store.scripts import READ_FIELD

CHUNK = 5_000  # commands per pipelined round trip
SETTLED_AFTER = dt.timedelta(days=2)  # a day older than this no longer changes


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _pipelined(client: Redis, commands: Sequence[tuple[str, ...]]) -> list[Any]:
    """Run ``commands`` (name and arguments) in pipelined chunks; answers in order."""
    answers: list[Any] = []
    for start in range(0, len(commands), CHUNK):
        async with client.pipeline(transaction=False) as pipeline:
            for command in commands[start : start + CHUNK]:
                pipeline.execute_command(*command)
            answers.extend(await pipeline.execute())
    return answers


async def _read_field(
    client: Redis, key_lists: Sequence[Sequence[str]], field: str, per_round_trip: int = 100
) -> list[list[Any]]:
    """``field`` of every hash of each list: one ``read_field.lua`` call per list,
    pipelined; the script is loaded first (and again if Redis lost it meanwhile)."""
    # A Cluster client (handed out as a Redis one: store.connect.ledger_reader) runs no
    # scripts in pipelines: one call per list, each in its slot.
    runs_on: object = client
    if isinstance(runs_on, RedisCluster):
        return [await READ_FIELD.run(runs_on, list(keys), [field]) for keys in key_lists]
    answers: list[list[Any]] = []
    await client.script_load(READ_FIELD.source)
    for start in range(0, len(key_lists), per_round_trip):
        chunk = key_lists[start : start + per_round_trip]
        for attempt in (1, 2):
            try:
                async with client.pipeline(transaction=False) as pipeline:
                    for keys in chunk:
                        pipeline.evalsha(READ_FIELD.sha, len(keys), *keys, field)
                    answers.extend(await pipeline.execute())
                break
            except NoScriptError:
                if attempt == 2:
                    raise
                await client.script_load(READ_FIELD.source)
    return answers


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True)
class DaysWanted:
    """A budget's local days to read, both included."""

    budget: Budget
    first: dt.date
    last: dt.date


@dataclass
class _Settled:
    first: dt.date
    values: array[int]  # spend of first + n, for the days that no longer change

    @property
    def last(self) -> dt.date:
        return self.first + dt.timedelta(days=len(self.values) - 1)


class DailySpend:
    """Settled spend per budget and local day; with ``keep_settled``, the days that no
    longer change are kept in memory (8 bytes a day) and not read again."""

    def __init__(self, client: Redis, keys: KeySchema, *, keep_settled: bool = False) -> None:
        self._client = client
        self._keys = keys
        self._keep = keep_settled
        self._settled: dict[str, _Settled] = {}

    @ledger_call
    async def read(self, wanted: Sequence[DaysWanted]) -> list[dict[dt.date, int]]:
        """Spend by day for each of ``wanted`` (days without spend are left out)."""
        plans: list[tuple[DaysWanted, list[dt.date], dict[dt.date, int]]] = []
        for item in wanted:
            kept = self._kept(item)
            start = max([item.first, *(day + dt.timedelta(days=1) for day in kept)])
            plans.append((item, _days(start, item.last), kept))
        history = self._keys.history
        answers = await _read_field(
            self._client,
            [[history(item.budget, day) for day in days] for item, days, _ in plans],
            "spent",
        )
        results = []
        for (item, days, kept), values in zip(plans, answers, strict=True):
            spent = dict(kept)
            spent.update(zip(days, (_int(value) for value in values), strict=True))
            if self._keep:
                self._remember(item, spent)
            results.append({day: value for day, value in spent.items() if value})
        return results

    def _kept(self, item: DaysWanted) -> dict[dt.date, int]:
        """What is kept of ``item``'s days, from its first day on without a gap."""
        known = self._settled.get(item.budget.id)
        if known is None or not known.first <= item.first <= known.last:
            return {}
        offset = (item.first - known.first).days
        count = min(len(known.values) - offset, (item.last - item.first).days + 1)
        return {item.first + dt.timedelta(days=n): known.values[offset + n] for n in range(count)}

    def _remember(self, item: DaysWanted, spent: Mapping[dt.date, int]) -> None:
        settled = _days(item.first, min(item.last, item.last - SETTLED_AFTER))
        if settled:
            values = array("q", (spent.get(day, 0) for day in settled))
            self._settled[item.budget.id] = _Settled(item.first, values)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what is kept of budgets not in ``keep`` (deleted since)."""
        kept = set(keep)
        for budget_id in [b for b in self._settled if b not in kept]:
            del self._settled[budget_id]


@ledger_call
async def read_hourly(
    client: Redis, keys: KeySchema, budgets: Sequence[Budget], now: dt.datetime
) -> list[dict[dt.datetime, int]]:
    """Settled spend per UTC hour of each budget, over the hourly retention."""
    today = now.astimezone(dt.UTC).date()
    days = _days(today - dt.timedelta(days=HOURLY_RETENTION.days - 1), today)
    commands = [("HGETALL", keys.hourly(budget, day)) for budget in budgets for day in days]
    answers = iter(await _pipelined(client, commands))
    results = []
    for _ in budgets:
        hours: dict[dt.datetime, int] = {}
        for day in days:
            for field, value in (next(answers) or {}).items():
                name = _text(field)
                if name.startswith("s:"):
                    hour = dt.datetime(day.year, day.month, day.day, int(name[2:]), tzinfo=dt.UTC)
                    hours[hour] = int(value)
        results.append(hours)
    return results


@ledger_call
async def read_user_spend(
    client: Redis, keys: KeySchema, budget: Budget, days: Sequence[dt.date]
) -> dict[str, int]:
    """A per-user template's spend by user over ``days`` (within the per-user window)."""
    answers = await _pipelined(client, [("HGETALL", keys.user_history(budget, d)) for d in days])
    users: dict[str, int] = {}
    for answer in answers:
        for field, value in (answer or {}).items():
            name = _text(field)
            if name.startswith("u:"):
                users[name[2:]] = users.get(name[2:], 0) + int(value)
    return users


@dataclass(frozen=True)
class Attributed:
    """The attribution of a range of days. ``days_with_spend``: days any spend was
    recorded on; ``days_without_users``: of those, the days whose per-user detail is gone
    (past the per-user window) when users were asked for."""

    cells: list[SpendCell]
    days_with_spend: frozenset[dt.date]
    days_without_users: frozenset[dt.date]


@functools.lru_cache(maxsize=65_536)
def _parts(label: bytes) -> tuple[str | None, ...]:
    """A cell's label (``tenant<LABEL>feature<LABEL>model<LABEL>user``), split; labels
    repeat from day to day, so each is split once."""
    return tuple(part.decode() or None for part in label.split(_LABEL))


_LABEL = LABEL.encode()
_SPENT, _COUNT = b"s" + _LABEL, b"n"


def _cells(day: dt.date, fields: Mapping[Any, Any]) -> list[SpendCell]:
    cells = []
    for raw, value in fields.items():
        name = raw.encode() if isinstance(raw, str) else raw
        if name.startswith(_SPENT):
            tenant, feature, model, user = _parts(name[2:])
            count = fields.get(_COUNT + name[1:] if isinstance(raw, bytes) else "n" + raw[1:])
            cells.append(SpendCell(day, tenant, feature, model, user, int(value), _int(count)))
    return cells


@ledger_call
async def read_attribution(
    client: Redis,
    keys: KeySchema,
    days: Sequence[dt.date],
    *,
    users: bool = False,
    tenants: frozenset[str] | None = None,
) -> Attributed:
    """Attributed spend on each UTC day of ``days``: by tenant, feature and model, or, with
    ``users``, by user too (days past the per-user window have none). ``tenants``: only
    these ("" for requests without a tenant)."""
    indexes = await _pipelined(client, [("HGETALL", keys.attribution_index(day)) for day in days])
    wanted: list[tuple[dt.date, str]] = []
    for day, index in zip(days, indexes, strict=True):
        for field in index or {}:
            name = _text(field)
            if name.startswith("s:") and (tenants is None or name[2:] in tenants):
                wanted.append((day, name[2:]))
    commands: list[tuple[str, ...]] = []
    for day, tenant in wanted:
        commands.append(("HGETALL", keys.attribution(tenant or None, day)))
        if users:
            commands.append(("HGETALL", keys.user_attribution(tenant or None, day)))
    answers = iter(await _pipelined(client, commands))
    cells: list[SpendCell] = []
    with_spend: set[dt.date] = set()
    without_users: set[dt.date] = set()
    for day, _ in wanted:
        aggregate = next(answers) or {}
        detail = next(answers) if users else None
        chosen = aggregate
        if users:
            if detail:
                chosen = detail
            elif aggregate:
                without_users.add(day)
        found = _cells(day, chosen)
        if found or aggregate:
            with_spend.add(day)
        cells.extend(found)
    return Attributed(cells, frozenset(with_spend), frozenset(without_users))


@dataclass(frozen=True)
class AttributedTotals:
    """Attributed spend summed by group over a range of days, and what was found on the
    way (``Attributed``'s days, and the tenants that had spend)."""

    rows: list[SpendRow]
    tenants: frozenset[str]
    days_with_spend: frozenset[dt.date]
    days_without_users: frozenset[dt.date]


async def sum_attribution(
    client: Redis,
    keys: KeySchema,
    days: Sequence[dt.date],
    group_by: Sequence[str],
    *,
    tenants: frozenset[str] | None = None,
) -> AttributedTotals:
    """``read_attribution`` a month at a time (a week at a time per user), summed by
    ``group_by`` as it is read (per user when ``group_by`` names user)."""
    days_per_read = 7 if "user" in group_by else 31
    totals = SpendTotals(group_by)
    found: set[str] = set()
    with_spend: set[dt.date] = set()
    without_users: set[dt.date] = set()
    for start in range(0, len(days), days_per_read):
        chunk = await read_attribution(
            client,
            keys,
            days[start : start + days_per_read],
            users="user" in group_by,
            tenants=tenants,
        )
        totals.add(chunk.cells)
        found.update(cell.tenant or "" for cell in chunk.cells)
        with_spend |= chunk.days_with_spend
        without_users |= chunk.days_without_users
    return AttributedTotals(
        totals.rows(), frozenset(found), frozenset(with_spend), frozenset(without_users)
    )


@dataclass(frozen=True)
class SettledRequest:
    """One entry of the settled-requests stream."""

    at: dt.datetime
    request_id: str
    cost_micros: int
    source: str  # who reported the usage (api, ext_proc, journal), or the sweeper (its estimate)
    budgets: tuple[str, ...]
    tenant: str | None = None
    feature: str | None = None
    model: str | None = None
    user: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    replaces_micros: int | None = None  # what an earlier settlement by expiry had charged


def _settled(fields: Mapping[str, str]) -> SettledRequest:
    def number(name: str) -> int | None:
        return int(fields[name]) if name in fields else None

    return SettledRequest(
        at=dt.datetime.fromtimestamp(int(fields.get("at", "0")) / 1000, dt.UTC),
        request_id=fields.get("request", ""),
        cost_micros=int(fields.get("cost", "0")),
        source=fields.get("source", ""),
        budgets=tuple(b for b in fields.get("budgets", "").split(",") if b),
        tenant=fields.get("tenant"),
        feature=fields.get("feature"),
        model=fields.get("model"),
        user=fields.get("user"),
        input_tokens=number("input_tokens"),
        output_tokens=number("output_tokens"),
        replaces_micros=number("replaces"),
    )


@ledger_call
async def read_settled(
    client: Redis, keys: KeySchema, start: dt.datetime, end: dt.datetime, batch: int = 5_000
) -> list[SettledRequest]:
    """The settled requests recorded in [start, end) (by Redis's clock, which names the
    entries), oldest first."""
    cursor = str(int(start.timestamp() * 1000))
    last = str(int(end.timestamp() * 1000) - 1)
    found: list[SettledRequest] = []
    while True:
        entries: Any = await client.xrange(keys.settled, cursor, last, count=batch)
        for _, fields in entries:
            found.append(_settled({_text(k): _text(v) for k, v in fields.items()}))
        if len(entries) < batch:
            return found
        cursor = "(" + _text(entries[-1][0])


@ledger_call
async def read_review_history(
    client: Redis,
    keys: KeySchema,
    budgets: Sequence[Budget],
    now: dt.datetime,
    daily: DailySpend | None = None,
) -> list[tuple[dict[dt.date, int], dict[dt.datetime, int]]]:
    """What a review of each budget at ``now`` reads: its daily spend over ``review_days``
    and its hourly spend (for the anomaly check)."""
    reader = daily or DailySpend(client, keys)
    days = await reader.read([DaysWanted(b, *review_days(b, now)) for b in budgets])
    hours = await read_hourly(client, keys, budgets, now)
    return list(zip(days, hours, strict=True))
