"""Whose a reservation is: the attribution its plan names, read without changing anything.

The API listener asks before it settles a usage report, so that a token of one tenant
cannot settle another tenant's request. A reservation's record and its plan are
written once, when it is reserved (``reserve.lua``, ``commit.lua``), and never change
tenant afterwards, so reading them before the settlement is safe.

The record is ``cost \\x1e settled \\x1e settled-by \\x1e plan key \\x1e choices`` (see
``reserve.lua``); the plan's second section holds the history lines, the last
``s\\x1f...`` field of which is the attribution label (see ``plans.history_lines``).
On Redis Cluster the record read first is the ``{global}`` anchor's; a tenant's
request has its attribution in the tenant's part, which the anchor's plan names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis

from budget_guard.domain.resolution import Attribution
from budget_guard.store.errors import ledger_call
from budget_guard.store.keys import KeySchema
from budget_guard.store.plans import FIELD, LABEL, LINE, SECTION, parse_attribution_label


class Owner(NamedTuple):
    """``found``: the reservation exists (settled or not); ``attribution``: whose it is
    (None when it was reserved without one, or its plan is gone)."""

    found: bool
    attribution: Attribution | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def attribution_in_plan(plan: str) -> Attribution | None:
    sections = plan.split(SECTION)
    if len(sections) < 2:
        return None
    found = None
    for line in sections[1].split(LINE):
        fields = line.split(FIELD)
        if len(fields) >= 2 and fields[1].startswith("s" + LABEL):
            found = fields[1][2:]
    if found is None and len(sections) > 5 and sections[5]:  # a Cluster anchor's label
        found = sections[5]
    return parse_attribution_label(found) if found is not None else None


@ledger_call
async def owners_of(client: Redis, keys: KeySchema, request_ids: Sequence[str]) -> list[Owner]:
    """Whose each reservation is, in two pipelined round trips (records, then plans);
    on Redis Cluster two more for a tenant's request, whose attribution is written in
    its tenant's part, not in the anchor's plan that names the parts (``store.sharded``)."""
    records = await _get_all(client, [keys.reservation(request_id) for request_id in request_ids])
    plans = await _plans_of(client, records)
    owners = [
        Owner(found=record is not None, attribution=attribution_in_plan(plan) if plan else None)
        for record, plan in zip(records, plans, strict=True)
    ]
    parts = [
        (index, tag)
        for index, (owner, plan) in enumerate(zip(owners, plans, strict=True))
        if owner.attribution is None and plan
        for tag in _linked_tags(plan)
    ]
    if parts:
        part_keys = [keys.reservation_in(tag, request_ids[index]) for index, tag in parts]
        part_plans = await _plans_of(client, await _get_all(client, part_keys))
        for (index, _), plan in zip(parts, part_plans, strict=True):
            attribution = attribution_in_plan(plan) if plan else None
            if attribution is not None and owners[index].attribution is None:
                owners[index] = owners[index]._replace(attribution=attribution)
    return owners


async def _get_all(client: Redis, keys: Sequence[str]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.get(key)
        return list(await pipeline.execute())


async def _plans_of(client: Redis, records: Sequence[Any]) -> list[str | None]:
    """The plan each record names (None when it names none, or the plan is gone)."""
    plan_keys = [_plan_key(record) for record in records]
    wanted = sorted({key for key in plan_keys if key is not None})
    plans: dict[str, str] = {}
    if wanted:
        found = await _get_all(client, wanted)
        plans = {key: _text(plan) for key, plan in zip(wanted, found, strict=True) if plan}
    return [plans.get(key) if key is not None else None for key in plan_keys]


def _linked_tags(plan: str) -> list[str]:
    """The other parts' hash tags an anchor's plan names (its fourth section)."""
    sections = plan.split(SECTION)
    return [tag for tag in sections[3].split(",") if tag] if len(sections) > 3 else []


def _plan_key(record: Any) -> str | None:
    if record is None:
        return None
    fields = _text(record).split(SECTION)
    return fields[3] if len(fields) >= 4 and fields[3] else None
