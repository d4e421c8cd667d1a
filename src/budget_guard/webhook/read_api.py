"""The read API for people and dashboards, on the API listener: ``GET /v1/spend`` (the
chargeback data, grouped) and ``GET /v1/budgets/{namespace}/{name}`` (one budget, its
review and its history). Both ask for a token (``webhook.api_tokens``), like
``POST /v1/usage``; a tenant token reads its tenants' spend and budgets only.

The figures are the ones ``budget-guard export`` and ``report`` print (the same domain
functions); the answers' shapes are the models in ``webhook.api_models``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from budget_guard.domain.budget import Budget
from budget_guard.domain.forecast import local_day_of
from budget_guard.domain.money import format_usd
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.domain.review import review_days, review_of, review_record
from budget_guard.domain.spend import DayRange, SpendQueryError, parse_group_by
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.history import (
    DailySpend,
    DaysWanted,
    read_review_history,
    read_user_spend,
    sum_attribution,
)
from budget_guard.store.usage import read_usage
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.api_tokens import ApiTokens, Caller, authenticate, forbidden
from budget_guard.webhook.ledger_access import LedgerAccess
from budget_guard.webhook.responses import JSON, error_answer
from budget_guard.webhook.views import budget_view

TOP_USERS = 20


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type=JSON)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_answer(status, code, message).body, content_type=JSON
    )


def _recent(
    period: DayRange, budget: Budget, now: dt.datetime, window: dt.timedelta
) -> list[dt.date]:
    """The days of ``period`` inside the per-user window."""
    window_start = local_day_of(budget, now) - window + dt.timedelta(days=1)
    return [day for day in period.days() if day >= window_start]


def _tenants_asked(caller: Caller, asked: frozenset[str]) -> frozenset[str] | web.Response | None:
    """The tenants a spend query reads: those asked (None: all), within the caller's."""
    if caller.tenants is None:
        return asked or None
    others = asked - caller.tenants
    if others:
        return forbidden(
            f"tenant {sorted(others)[0]!r} is not one this token acts for ({caller.describe()})"
        )
    return asked or caller.tenants


@dataclass
class ReadApi:
    config: ConfigHolder
    ledger: LedgerAccess
    tokens: ApiTokens
    clock: Callable[[], dt.datetime]

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/spend", self.get_spend)
        app.router.add_get("/v1/budgets/{namespace}/{name}", self.get_budget)

    async def get_spend(self, request: web.Request) -> web.Response:
        caller = authenticate(self.tokens, request)
        if isinstance(caller, web.Response):
            return caller
        query = request.query
        try:
            period = DayRange.parse(query.get("from"), query.get("to"), ("from", "to"))
            group_by = parse_group_by(query.get("groupBy"), "groupBy")
        except SpendQueryError as error:
            return _error(400, "invalid_query", str(error))
        tenants = _tenants_asked(caller, frozenset(query.getall("tenant", [])))
        if isinstance(tenants, web.Response):
            return tenants
        operations = self.ledger.operations
        try:
            found = await sum_attribution(
                operations.client, operations.keys, period.days(), group_by, tenants=tenants
            )
        except LedgerUnavailable as error:
            return _error(503, "ledger_unavailable", f"the ledger cannot be reached: {error}")
        if found.days_without_users:
            days = sorted(found.days_without_users)
            return _error(
                400,
                "user_detail_not_kept",
                f"per-user detail is no longer kept for {days[0]}..{days[-1]} (the per-user "
                "window): group without user, or ask for recent days",
            )
        rows = found.rows
        return _json(
            {
                "from": period.first.isoformat(),
                "to": period.last.isoformat(),
                "groupBy": list(group_by),
                "rows": [
                    {
                        **dict(zip(group_by, row.group, strict=True)),
                        "requests": row.requests,
                        "costUsd": format_usd(row.cost_micros),
                    }
                    for row in rows
                ],
                "requests": sum(row.requests for row in rows),
                "totalUsd": format_usd(sum(row.cost_micros for row in rows)),
            }
        )

    async def get_budget(self, request: web.Request) -> web.Response:
        caller = authenticate(self.tokens, request)
        if isinstance(caller, web.Response):
            return caller
        config = self.config.current
        if config is None:
            return _error(503, "config_unavailable", "no budget configuration is loaded yet")
        budget_id = f"{request.match_info['namespace']}/{request.match_info['name']}"
        budget = config.snapshot.budget(budget_id)
        if budget is None or not caller.may_act_for(budget.scope.tenant):
            # Another tenant's budget is "not found" too: a token learns nothing of it.
            return _error(404, "unknown_budget", f"no budget {budget_id} is in force")
        now = self.clock()
        query = request.query
        try:
            if "from" in query or "to" in query:
                period = DayRange.parse(query.get("from"), query.get("to"), ("from", "to"))
            else:
                period = DayRange(*review_days(budget, now))
        except SpendQueryError as error:
            return _error(400, "invalid_query", str(error))
        operations = self.ledger.operations
        client, keys = operations.client, operations.keys
        snapshot: BudgetSnapshot = config.snapshot
        try:
            (usage,) = await read_usage(client, snapshot, now, keys, [budget])
            ((days, hours),) = await read_review_history(client, keys, [budget], now)
            (history,) = await DailySpend(client, keys).read(
                [DaysWanted(budget, period.first, period.last)]
            )
            users: dict[str, int] = {}
            if budget.scope.is_user_template:
                window = operations.settings.user_detail_retention
                recent = _recent(period, budget, now, window)
                users = await read_user_spend(client, keys, budget, recent)
        except LedgerUnavailable as error:
            return _error(503, "ledger_unavailable", f"the ledger cannot be reached: {error}")
        review, anomaly = review_of(budget, usage, days, hours, now)
        top = sorted(users.items(), key=lambda item: (-item[1], item[0]))[:TOP_USERS]
        return _json(
            {
                "budget": budget_view(usage),
                "review": review_record(review),
                "anomaly": {"detected": anomaly.detected, "message": anomaly.message},
                "history": {
                    "from": period.first.isoformat(),
                    "to": period.last.isoformat(),
                    "days": [
                        {"day": day.isoformat(), "spentUsd": format_usd(history.get(day, 0))}
                        for day in period.days()
                    ],
                },
                "users": [{"user": user, "spentUsd": format_usd(spent)} for user, spent in top],
            }
        )
