"""POST /v1/usage: every vendor's usage shape, exactly once, with clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from budget_guard.localservices import RedisServer
from tests.fixtures.webhook import RunningWebhook, budget, start_webhook

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
BUDGETS = [budget("acme", "10", tenant="acme")]


async def reserve(wh: RunningWebhook, request_id: str, model: str = "gpt-4o") -> None:
    headers = {"x-budget-tenant": "acme", "x-budget-feature": "chat", "x-request-id": request_id}
    answer = await wh.check({**CHAT, "model": model}, headers=headers)
    assert answer.status == 200


async def used(wh: RunningWebhook) -> dict[str, str]:
    (acme,) = (await wh.api("/v1/budgets")).json()["budgets"]
    return {key: acme[key] for key in ("spentUsd", "reservedUsd", "usedUsd")}


@pytest.mark.parametrize(
    ("model", "usage", "charged"),
    [
        # OpenAI chat: 1000 prompt tokens of which 400 cached, 200 completion tokens.
        (
            "gpt-4o",
            {
                "prompt_tokens": 1000,
                "completion_tokens": 200,
                "prompt_tokens_details": {"cached_tokens": 400},
            },
            "0.004",
        ),  # 600 * 2.50 + 400 * 1.25 + 200 * 10.00 micro-USD
        # OpenAI Responses.
        (
            "gpt-4o",
            {
                "input_tokens": 1000,
                "output_tokens": 200,
                "input_tokens_details": {"cached_tokens": 400},
            },
            "0.004",
        ),
        # Anthropic: input excludes the cache reads and writes.
        (
            "claude-sonnet-4-5",
            {
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 200,
            },
            "0.0021",
        ),
        # Gemini, as usageMetadata.
        (
            "gemini-2.5-flash",
            {
                "usageMetadata": {
                    "promptTokenCount": 1000,
                    "candidatesTokenCount": 100,
                    "thoughtsTokenCount": 50,
                    "cachedContentTokenCount": 200,
                }
            },
            "0.000621",
        ),
    ],
)
async def test_each_vendor_shape_is_priced_exactly(
    tmp_path: Path, redis_server: RedisServer, model: str, usage: dict[str, object], charged: str
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        await reserve(wh, "r1", model)
        answer = await wh.settle({"request_id": "r1", "model": model, "usage": usage})
        assert answer.status == 200
        assert answer.json()["status"] == "settled"
        assert answer.json()["charged_usd"] == charged
        assert (await used(wh))["spentUsd"] == charged
        assert (await used(wh))["reservedUsd"] == "0.00"


async def test_settlement_is_idempotent_and_a_cost_may_be_given(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        await reserve(wh, "r1")
        first = await wh.settle({"request_id": "r1", "cost_usd": "0.0123"})
        again = await wh.settle({"request_id": "r1", "cost_usd": "9.99"})
        assert (first.status, first.json()["status"]) == (200, "settled")
        assert (again.status, again.json()["status"]) == (200, "already_settled")
        assert again.json()["charged_usd"] == "0.0123"
        assert (await used(wh))["spentUsd"] == "0.0123"


async def test_a_batch_reports_each_item(tmp_path: Path, redis_server: RedisServer) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        await reserve(wh, "a")
        await reserve(wh, "b")
        answer = await wh.settle(
            [
                {"request_id": "a", "cost_usd": 0.001},
                {
                    "request_id": "b",
                    "model": "gpt-4o",
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10},
                },
                {"request_id": "never-checked", "cost_usd": "0.5"},
            ]
        )
        assert answer.status == 200
        statuses = [item["status"] for item in answer.json()["results"]]
        assert statuses == ["settled", "settled", "unknown_request_id"]
        assert (await used(wh))["spentUsd"] == "0.001125"


async def test_unknown_ids_and_bad_tokens(tmp_path: Path, redis_server: RedisServer) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        await reserve(wh, "r1")
        unknown = await wh.settle({"request_id": "nope", "cost_usd": "1"})
        assert unknown.status == 404
        assert unknown.json()["status"] == "unknown_request_id"
        for token in (None, "wrong-token"):
            refused = await wh.settle({"request_id": "r1", "cost_usd": "1"}, token=token)
            assert refused.status == 401
            assert refused.error["code"] == "unauthorized"
        assert (await used(wh))["spentUsd"] == "0.00"  # nothing changed


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"model": "gpt-4o", "usage": {"prompt_tokens": 1}}, "request_id: is required"),
        ({"request_id": "r1", "usage": {"prompt_tokens": 1}}, "model: is required"),
        ({"request_id": "r1", "model": "gpt-4o"}, "usage: is required"),
        (
            {"request_id": "r1", "model": "gpt-4o", "usage": {"prompt_tokens": -5}},
            "usage.prompt_tokens: must be a whole number of tokens",
        ),
        (
            {"request_id": "r1", "model": "gpt-4o", "usage": {"prompt_tokens": 1.5}},
            "usage.prompt_tokens: must be a whole number of tokens",
        ),
        (
            {
                "request_id": "r1",
                "model": "gpt-4o",
                "usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 20}},
            },
            "usage.prompt_tokens_details.cached_tokens: 20 cached tokens exceed",
        ),
        (
            {"request_id": "r1", "model": "gpt-4o", "usage": {"tokens": 5}},
            "usage: no token counts found",
        ),
        ({"request_id": "r1", "cost_usd": "-1"}, "cost_usd: must be a finite amount"),
        ({"request_id": "r1", "cost_usd": "NaN"}, "cost_usd: must be a finite amount"),
        (
            {"request_id": "r1", "model": "mystery", "usage": {"prompt_tokens": 1}},
            "model: model 'mystery' has no price",
        ),
        (
            [{"request_id": "r1", "cost_usd": "1"}, {"request_id": "r2", "cost_usd": "x"}],
            "[1].cost_usd: must be a decimal amount",
        ),
        ([], "body: a list of 1 to 1000"),
    ],
)
async def test_bad_shapes_name_the_field_and_change_nothing(
    tmp_path: Path, redis_server: RedisServer, payload: object, field: str
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        await reserve(wh, "r1")
        before = await used(wh)
        answer = await wh.settle(payload)
        assert answer.status == 400
        assert answer.error["code"] == "invalid_usage"
        assert field in answer.error["message"]
        assert await used(wh) == before


async def test_spend_metrics_have_bounded_labels(tmp_path: Path, redis_server: RedisServer) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        await reserve(wh, "known")
        surprise = {"x-budget-tenant": "surprise-tenant", "x-request-id": "unknown-tenant"}
        assert (await wh.check(CHAT, headers=surprise)).status == 200
        await wh.settle(
            [
                {"request_id": "known", "cost_usd": "0.5"},
                {"request_id": "unknown-tenant", "cost_usd": "0.25"},
            ]
        )
        metrics = (await wh.api("/metrics")).body.decode()
        assert (
            'budget_guard_spend_usd_total{feature="other",model="gpt-4o",tenant="acme"} 0.5'
            in metrics
        )
        assert (
            'budget_guard_spend_usd_total{feature="none",model="gpt-4o",tenant="other"} 0.25'
            in metrics
        )
        assert "surprise-tenant" not in metrics
        assert (
            'budget_guard_decisions_total{decision="allow",reason="within_budget"} 2.0' in metrics
        )
        assert "budget_guard_decision_seconds_bucket" in metrics


async def test_a_report_far_below_the_counted_prompt_is_settled_counted_and_logged(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = " ".join(f"word{i}" for i in range(400))  # hundreds of tokens in any count
    long_chat = {**CHAT, "messages": [{"role": "user", "content": prompt}]}
    headers = {"x-budget-tenant": "acme", "x-budget-feature": "chat"}
    below = 'budget_guard_usage_below_estimate_total{tenant="acme"}'
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        for request_id in ("honest", "lying", "free", "dated", "fallback"):
            answer = await wh.check(long_chat, headers={**headers, "x-request-id": request_id})
            assert answer.status == 200
        honest = {"prompt_tokens": 2000, "completion_tokens": 5}
        assert (await wh.settle({"request_id": "honest", "model": "gpt-4o", "usage": honest})).json()["status"] == "settled"  # fmt: skip
        assert below not in (await wh.api("/metrics")).body.decode()

        with caplog.at_level(logging.WARNING, logger="budget_guard.webhook.settlement"):
            lie = {"prompt_tokens": 10, "completion_tokens": 5}
            lying = await wh.settle({"request_id": "lying", "model": "gpt-4o", "usage": lie})
            free = await wh.settle({"request_id": "free", "cost_usd": "0"})
            # The same model by its dated name is judged; another model (a fallback) is not.
            for request_id, model in (("dated", "gpt-4o-2024-08-06"), ("fallback", "gpt-4o-mini")):
                report = {"request_id": request_id, "model": model, "usage": lie}
                assert (await wh.settle(report)).json()["status"] == "settled"
        assert lying.json()["status"] == free.json()["status"] == "settled"  # settled all the same
        assert f"{below} 3.0" in (await wh.api("/metrics")).body.decode()
        lines = [r.getMessage() for r in caplog.records if "far below" in r.getMessage()]
        assert len(lines) == 3
        assert lines[0].startswith("usage of lying (tenant acme) reported far below its estimate")
        assert "10 prompt tokens reported" in lines[0] and "estimate 0.0" in lines[0]
        assert "0.00 USD reported" in lines[1]
