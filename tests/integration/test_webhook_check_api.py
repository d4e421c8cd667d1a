"""POST /v1/check: the check listener's decision without Envoy, the same status,
headers and body in a JSON answer, behind the usage token."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from budget_guard.localservices import RedisServer
from tests.fixtures.webhook import AGENT, USAGE_TOKEN, Answer, RunningWebhook, budget, start_webhook

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
# Room for two requests of CHAT: its estimate is a little over $0.001.
BUDGETS = [budget("acme", "0.0025", tenant="acme", thresholds=[99])]
VARYING = (
    "x-budget-request-id",
    "x-request-id",
    "x-budget-remaining-usd",
    "retry-after",
    "x-budget-reset",
)


async def decide(
    wh: RunningWebhook, call: dict[str, Any], token: str | None = USAGE_TOKEN
) -> Answer:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    async with wh.session.post(wh.api_url + "/v1/check", json=call, headers=headers) as answer:
        return Answer(answer.status, answer.headers, await answer.read())


def comparable(headers: Mapping[str, str]) -> dict[str, str]:
    """The decision's headers, without those that differ from one request to the next."""
    return {
        name.lower(): value
        for name, value in headers.items()
        if (name.lower().startswith("x-") or name.lower() == "content-type")
        and name.lower() not in VARYING
    }


async def test_it_answers_as_the_check_listener_does(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        for expected_status in (200, 429):  # the budget's two requests, then denials
            listener = await wh.check(CHAT)
            api = await decide(wh, {"headers": AGENT, "body": CHAT})
            assert api.status == 200
            outcome = api.json()
            assert listener.status == outcome["status"] == expected_status
            assert comparable(listener.headers) == comparable(outcome["headers"])
            if expected_status == 429:
                listener_body, api_body = listener.error, outcome["body"]["error"]
                for field in ("request_id", "message", "retry_after_seconds", "spent_usd"):
                    listener_body.pop(field), api_body.pop(field)
                assert api_body == listener_body


async def test_errors_are_the_listeners_and_the_token_is_required(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        no_model = await decide(
            wh, {"path": "/v1/chat/completions", "headers": AGENT, "body": {"messages": []}}
        )
        assert no_model.json()["status"] == 400
        assert no_model.json()["body"]["error"]["code"] == "missing_model"
        anonymous = await decide(wh, {"body": CHAT})
        assert anonymous.json()["status"] == 401
        for token in (None, "wrong"):
            refused = await decide(wh, {"headers": AGENT, "body": CHAT}, token=token)
            assert refused.status == 401
            assert refused.error["code"] == "unauthorized"
        malformed = await decide(wh, {"headers": "tenant=acme"})
        assert malformed.status == 400
        assert malformed.error["code"] == "invalid_check"


async def test_the_openapi_document_describes_it(tmp_path: Path, redis_server: RedisServer) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        document = (await wh.api("/openapi.json")).json()
    check = document["paths"]["/v1/check"]["post"]
    assert check["security"] == [{"usageToken": []}]
    assert {"CheckCall", "CheckOutcome"} <= set(document["components"]["schemas"])
