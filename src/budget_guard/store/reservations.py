"""Whose a reservation is: the attribution its plan names, read without changing anything.

The API listener asks before it settles a usage report, so that a token of one tenant
cannot settle another tenant's request. A reservation's record and its plan are
written once, when it is reserved (``reserve.lua``, ``commit.lua``), and never change
tenant afterwards, so reading them before the settlement is safe.

The record is ``cost \\x1e settled \\x1e settled-by \\x1e plan key \\x1e choices`` (see
``reserve.lua``); the plan's second section holds the history lines, the last
``s\\x1f...`` field of which is the attribution label (see ``plans.history_lines``).
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
    return parse_attribution_label(found) if found is not None else None


@ledger_call
async def owners_of(client: Redis, keys: KeySchema, request_ids: Sequence[str]) -> list[Owner]:
    """Whose each reservation is, in two pipelined round trips (records, then plans)."""
    async with client.pipeline(transaction=False) as pipeline:
        for request_id in request_ids:
            pipeline.get(keys.reservation(request_id))
        records = await pipeline.execute()
    plan_keys = [_plan_key(record) for record in records]
    wanted = sorted({key for key in plan_keys if key is not None})
    plans: dict[str, str] = {}
    if wanted:
        async with client.pipeline(transaction=False) as pipeline:
            for key in wanted:
                pipeline.get(key)
            found = await pipeline.execute()
        plans = {key: _text(plan) for key, plan in zip(wanted, found, strict=True) if plan}
    owners = []
    for record, plan_key in zip(records, plan_keys, strict=True):
        plan = plans.get(plan_key) if plan_key is not None else None
        attribution = attribution_in_plan(plan) if plan is not None else None
        owners.append(Owner(found=record is not None, attribution=attribution))
    return owners


def _plan_key(record: Any) -> str | None:
    if record is None:
        return None
    fields = _text(record).split(SECTION)
    return fields[3] if len(fields) >= 4 and fields[3] else None
