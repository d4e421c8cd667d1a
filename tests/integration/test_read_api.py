"""The read API on a real webhook and Redis: GET /v1/spend and GET /v1/budgets/{ns}/{name}
behind the usage token, their figures equal to the ledger's, every answer valid against
the OpenAPI document's models (a field added to one and not the other fails here)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from budget_guard.localservices import RedisServer
from budget_guard.webhook.api_models import BudgetDetail, ErrorBody, SpendAnswer
from tests.fixtures.webhook import USAGE_TOKEN, Answer, Clock, RunningWebhook, budget, start_webhook

pytestmark = pytest.mark.redis

NOW = dt.datetime(2030, 11, 20, 12, 0, tzinfo=dt.UTC)
CHAT = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}


async def get(wh: RunningWebhook, path: str, token: str | None = USAGE_TOKEN) -> Answer:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with wh.session.get(wh.api_url + path, headers=headers) as response:
        return Answer(response.status, response.headers, await response.read())


async def spend(wh: RunningWebhook, tenant: str, user: str, cost: str, request_id: str) -> None:
    headers = {"x-budget-tenant": tenant, "x-budget-user": user, "x-budget-feature": "chat",
               "x-request-id": request_id}  # fmt: skip
    assert (await wh.check(CHAT, headers=headers)).status == 200
    assert (await wh.settle({"request_id": request_id, "cost_usd": cost})).status == 200


def budgets() -> list[dict[str, Any]]:
    return [
        budget("acme", "100", tenant="acme"),
        budget("everyone", "1000"),
        budget("each", "5", user="*", commitment={"amount": "10"}),
    ]


async def test_spend_and_budget_detail_behind_the_usage_token(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, budgets(), clock=Clock(NOW), local_leases=False
    ) as wh:
        await spend(wh, "acme", "alice", "1.25", "r1")
        await spend(wh, "acme", "bob", "0.75", "r2")
        await spend(wh, "globex", "gary", "3.00", "r3")

        refused = await get(wh, "/v1/spend?from=2030-11&to=2030-11", token=None)
        assert refused.status == 401
        ErrorBody.model_validate(refused.json())
        assert (await get(wh, "/v1/budgets/default/acme", token="wrong")).status == 401

        answer = await get(wh, "/v1/spend?from=2030-11-01&to=2030-11-30&groupBy=tenant")
        assert answer.status == 200
        spend_answer = SpendAnswer.model_validate(answer.json())
        assert [(r.tenant, r.costUsd, r.requests) for r in spend_answer.rows] == [
            ("acme", "2.00", 2),
            ("globex", "3.00", 1),
        ]
        assert spend_answer.totalUsd == "5.00" and spend_answer.start == "2030-11-01"

        by_user = await get(wh, "/v1/spend?from=2030-11-20&to=2030-11-20&groupBy=user&tenant=acme")
        rows = SpendAnswer.model_validate(by_user.json()).rows
        assert [(r.user, r.costUsd) for r in rows] == [("alice", "1.25"), ("bob", "0.75")]

        bad = await get(wh, "/v1/spend?from=2030-11-31&to=2030-12-01")
        assert bad.status == 400 and bad.error["code"] == "invalid_query"
        assert bad.error["message"].startswith("from: '2030-11-31' is not a day")
        worse = await get(wh, "/v1/spend?from=2030-11&to=2030-11&groupBy=team")
        assert worse.status == 400 and "groupBy: unknown dimension 'team'" in worse.error["message"]

        detail = await get(wh, "/v1/budgets/default/acme")
        assert detail.status == 200
        acme = BudgetDetail.model_validate(detail.json())
        assert acme.budget["spentUsd"] == "2.00"
        assert (acme.review.spentUsd, acme.review.allocatedUsd) == ("2.00", "100.00")
        assert acme.review.forecast is not None
        assert acme.review.forecast.message == (
            "too little history to forecast: 0 complete days with spend, 3 needed"
        )
        assert acme.history.days[-1].day == "2030-11-20"
        assert acme.history.days[-1].spentUsd == "2.00"
        assert not acme.anomaly.detected

        each = BudgetDetail.model_validate((await get(wh, "/v1/budgets/default/each")).json())
        assert [(u.user, u.spentUsd) for u in each.users] == [
            ("gary", "3.00"),
            ("alice", "1.25"),
            ("bob", "0.75"),
        ]
        assert each.review.perUser and each.review.commitment is not None
        assert each.review.commitment.utilizationPercent == "50.0"

        ranged = await get(wh, "/v1/budgets/default/everyone?from=2030-11-19&to=2030-11-20")
        days = BudgetDetail.model_validate(ranged.json()).history.days
        assert [(d.day, d.spentUsd) for d in days] == [
            ("2030-11-19", "0.00"),
            ("2030-11-20", "5.00"),
        ]
        missing = await get(wh, "/v1/budgets/default/nobody")
        assert missing.status == 404 and missing.error["code"] == "unknown_budget"
        paths = (await wh.api("/openapi.json")).json()["paths"]
        assert {"/v1/spend", "/v1/budgets/{namespace}/{name}"} <= set(paths)
