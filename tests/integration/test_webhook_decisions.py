"""What the webhook answers, and what it tells the client, for each kind of decision."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from budget_guard.localservices import RedisServer
from tests.factories import manifest
from tests.fixtures.webhook import AGENT, Clock, budget, start_webhook

pytestmark = pytest.mark.redis

# Real prices of gpt-4o: 2.50 / 10.00 USD per 1M tokens.
CHAT = {
    "model": "gpt-4o",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Summarise the quarterly report."}],
}
NOW = dt.datetime(2030, 11, 28, 20, 48, tzinfo=dt.UTC)  # 3h 12m before midnight UTC


async def test_denial_explains_whose_budget_which_period_how_much_and_when(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    budgets = [
        budget(
            "agent-daily",
            "0.002",
            feature="research",
            period="Daily",
            upgradeURL="https://billing.example.com/upgrade",
        )
    ]
    async with start_webhook(tmp_path, redis_server.url, budgets, clock=Clock(NOW)) as wh:
        assert (await wh.check(CHAT)).status == 200
        denied = await wh.check(CHAT, headers={**AGENT, "x-request-id": "req-429"})
        assert denied.status == 429
        assert denied.headers["retry-after"] == str(3 * 3600 + 12 * 60)
        assert denied.headers["x-budget-reset"] == "2030-11-29T00:00:00Z"
        assert denied.headers["x-budget-scope"] == "feature=research"
        assert denied.headers["x-budget-name"] == "default/agent-daily"
        error = denied.error
        assert error["type"] == error["code"] == "budget_exceeded"
        assert error["scope"] == "feature=research"
        assert error["limit_usd"] == "0.002"
        assert error["resets_at"] == "2030-11-29T00:00:00Z"
        assert error["upgrade_url"] == "https://billing.example.com/upgrade"
        assert error["request_id"] == "req-429"
        message = error["message"]
        assert "feature research's daily budget 'default/agent-daily'" in message
        assert f"${error['spent_usd']} of $0.002 used this day (2030-11-28)" in message
        assert "It resets in 3h 12m, at 2030-11-29T00:00:00Z." in message
        assert "https://billing.example.com/upgrade" in message


async def test_a_per_user_template_says_whose_quota_ran_out(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    budgets = [budget("pro-users", "0.0015", user="*", tier="pro")]  # one request fits
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        await wh.check(CHAT)
        denied = await wh.check(CHAT)
        assert denied.status == 429
        assert denied.headers["x-budget-scope"] == "user=agent-7,tier=pro"
        assert "user agent-7's pro tier monthly budget" in denied.error["message"]
        other_user = await wh.check(CHAT, headers={**AGENT, "x-budget-user": "someone-else"})
        assert other_user.status == 200  # each user has a quota of their own


async def test_soft_limits_and_the_model_downgrade(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    limit = "0.005"  # one request of CHAT costs about 0.00108
    budgets = [
        budget(
            "research",
            limit,
            feature="research",
            thresholds=[40, 60, 80],
            onSoftLimit={"degradeModels": {"gpt-4o": "gpt-4o-mini"}},
        )
    ]
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        first = await wh.check(CHAT)
        assert "x-budget-soft-limit" not in first.headers
        assert "x-budget-model-override" not in first.headers
        soft = []
        for _ in range(3):
            answer = await wh.check(CHAT)
            soft.append(answer.headers.get("x-budget-soft-limit"))
            override = answer.headers.get("x-budget-model-override")
        assert soft == ["40", "60", "80"]
        assert override == "gpt-4o-mini"
        other_model = await wh.check({**CHAT, "model": "claude-haiku-4-5"})
        assert "x-budget-model-override" not in other_model.headers  # nothing cheaper named


async def test_observe_mode_never_blocks_and_says_it_would_have(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    budgets = [budget("shadow", "0.000001", tenant="acme", enforcement="Observe")]
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        answer = await wh.check(CHAT)
        assert answer.status == 200
        assert answer.headers["x-budget-would-deny"] == "default/shadow"


async def test_a_burst_pool_takes_over_then_its_cap_holds(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    now = dt.datetime.now(dt.UTC)
    budgets = [
        budget("research", "0.0015", feature="research"),
        manifest(
            "BurstBudget",
            "launch",
            {
                "budgetRef": {"name": "research"},
                "amount": "0.0025",
                "validFrom": (now - dt.timedelta(days=1)).isoformat(),
                "validUntil": (now + dt.timedelta(days=1)).isoformat(),
                "approvedBy": "cfo@example.com",
                "maxRequestCost": "0.002",
            },
        ),
    ]
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        assert "x-budget-burst-pool" not in (await wh.check(CHAT)).headers
        pooled = [await wh.check(CHAT) for _ in range(2)]
        assert [a.headers.get("x-budget-burst-pool") for a in pooled] == ["default/launch"] * 2
        assert (await wh.check(CHAT)).status == 429  # the pool is spent
        big = {**CHAT, "max_tokens": 1000}  # ~ 0.0101 USD: over maxRequestCost anyway
        assert (await wh.check(big)).status == 429


async def test_missing_identity_and_the_anonymous_identity(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    from budget_guard.domain.resolution import RequestIdentity
    from budget_guard.webhook.settings import IdentitySettings

    async with start_webhook(tmp_path, redis_server.url, [budget("g", "10")]) as wh:
        missing = await wh.check(CHAT, headers={})
        assert missing.status == 401
        assert "x-budget-tenant and/or x-budget-user" in missing.error["message"]
        bad = await wh.check(CHAT, headers={"x-budget-user": "has space"})
        assert bad.status == 401
    anonymous = IdentitySettings(anonymous=RequestIdentity(tenant="public", user="anonymous"))
    budgets = [budget("public", "0.000001", tenant="public")]
    async with start_webhook(tmp_path, redis_server.url, budgets, identity=anonymous) as wh:
        denied = await wh.check(CHAT, headers={})
        assert denied.status == 429
        assert denied.headers["x-budget-scope"] == "tenant=public"


async def test_bad_bodies_get_clear_answers(tmp_path: Path, redis_server: RedisServer) -> None:
    async with start_webhook(tmp_path, redis_server.url, [budget("g", "10")]) as wh:
        json_headers = {**AGENT, "content-type": "application/json"}
        malformed = await wh.check(data=b'{"model": "gpt-4o",, }', headers=json_headers)
        assert malformed.status == 400
        assert malformed.error["code"] == "invalid_json"
        assert re.search(
            r"not valid JSON: Expecting .* at line 1 column \d+", malformed.error["message"]
        )
        not_object = await wh.check(data=b"[1, 2]", headers=json_headers)
        assert not_object.status == 400
        assert "must be a JSON object" in not_object.error["message"]
        no_model = await wh.check({"messages": [{"role": "user", "content": "hi"}]})
        assert no_model.status == 400
        assert "x-budget-model" in no_model.error["message"]
        header_model = await wh.check(
            {"messages": [{"role": "user", "content": "hi"}]},
            headers={**AGENT, "x-budget-model": "gpt-4o-mini"},
        )
        assert header_model.status == 200
        gemini = await wh.check(
            {"contents": [{"parts": [{"text": "hi"}]}]},
            path="/v1beta/models/gemini-2.5-flash:generateContent",
        )
        assert gemini.status == 200
        audio = await wh.check(
            data=b"\x00\x01binary upload" * 100,
            headers={**AGENT, "content-type": "audio/mpeg", "x-budget-model": "gpt-4o-mini"},
        )
        assert audio.status == 200
        assert audio.headers["x-budget-estimator"] == "heuristic:bytes/4"
        too_big = await wh.check(data=b"{" + b" " * (1024 * 1024), headers=json_headers)
        assert too_big.status == 413
        assert too_big.error["code"] == "body_too_large"


async def test_absurd_max_tokens_is_capped_at_the_model_maximum(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, [budget("g", "1000")]) as wh:
        capped = await wh.check({**CHAT, "max_tokens": 10**12})
        at_max = await wh.check({**CHAT, "max_tokens": 16384})  # gpt-4o's maximum output
        assert capped.status == 200
        cost = capped.headers["x-budget-estimated-cost-usd"]
        assert cost == at_max.headers["x-budget-estimated-cost-usd"]
        assert float(cost) < 0.2


async def test_unknown_models_follow_the_policy(tmp_path: Path, redis_server: RedisServer) -> None:
    mystery = {"model": "mystery-llm-9", "prompt": "hello"}
    async with start_webhook(tmp_path, redis_server.url, [budget("g", "10")]) as wh:
        denied = await wh.check(mystery)
        assert denied.status == 403
        assert denied.error["code"] == "unknown_model"
        assert "'mystery-llm-9' has no price" in denied.error["message"]
    pricing = {"models": {}, "unknownModelPolicy": {"action": "PriceAs", "model": "gpt-4o"}}
    async with start_webhook(
        tmp_path, redis_server.url, [budget("g", "10")], pricing=pricing
    ) as wh:
        priced = await wh.check(mystery)
        assert priced.status == 200
        assert float(priced.headers["x-budget-estimated-cost-usd"]) > 0


async def test_budgets_for_a_model_match_its_dated_versions(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    budgets = [budget("gpt4o-only", "0.000001", model="gpt-4o")]
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        dated = await wh.check({**CHAT, "model": "gpt-4o-2024-08-06"})
        assert dated.status == 429
        assert (await wh.check({**CHAT, "model": "gpt-4o-mini"})).status == 200


async def test_a_reused_request_id_gets_its_own_reservation(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, [budget("g", "10")]) as wh:
        headers = {**AGENT, "x-request-id": "same-id"}
        first = await wh.check(CHAT, headers=headers)
        second = await wh.check(CHAT, headers=headers)
        assert first.headers["x-budget-request-id"] == "same-id"
        assert second.headers["x-budget-request-id"] not in ("same-id", "")


NOT_INFERENCE = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/files", b"--boundary\r\nContent-Disposition: form-data; name=file\r\n\r\nx"),
    ("POST", "/v1/messages/count_tokens", b'{"model":"claude-sonnet-5","messages":[]}'),
    ("GET", "/v1/batches/batch_abc", None),
    ("POST", "/v1/fine_tuning/jobs", b'{"model":"gpt-4o-mini","training_file":"file-1"}'),
    ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", b'{"contents":[]}'),
    ("GET", "/healthz", None),
    ("POST", "/internal/tools/search", b'{"query":"no model here"}'),  # unknown, no model
]


@pytest.mark.parametrize(("method", "path", "body"), NOT_INFERENCE)
async def test_requests_that_are_not_inference_cost_nothing_and_are_never_refused(
    tmp_path: Path, redis_server: RedisServer, method: str, path: str, body: bytes | None
) -> None:
    budgets = [budget("spent", "0.000001", tenant="acme")]  # any priced call is denied
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        answer = await wh.check(method=method, path=path, data=body)
        assert answer.status == 200, answer.body
        assert answer.headers["x-budget-estimated-cost-usd"] == "0.00"
        (spent,) = (await wh.api("/v1/budgets")).json()["budgets"]
        assert spent["usedUsd"] == "0.00"
        priced = await wh.check(CHAT)
        assert priced.status == 429  # the same identity, on an inference path


async def test_an_inference_path_without_a_model_is_refused_but_an_unknown_path_with_one_is_priced(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, [budget("acme", "10")]) as wh:
        refused = await wh.check({"messages": []}, path="/v1/chat/completions")
        assert refused.status == 400
        assert refused.error["code"] == "missing_model"
        assert "/v1/chat/completions is an inference endpoint" in refused.error["message"]
        gateway_route = await wh.check(CHAT, path="/llm/my-gateway/infer")
        assert gateway_route.status == 200
        assert gateway_route.headers["x-budget-estimated-cost-usd"] != "0.00"


async def test_an_agent_loop_resending_its_conversation_is_estimated_as_if_read_whole(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Turn by turn, a conversation resent with a few new messages is read from where
    the previous turn ended (webhook.resent), and each check estimates exactly what a
    webhook reading every body whole estimates."""
    budgets = [budget("agents", "1000", feature="research")]
    for name in ("resent", "whole"):
        (tmp_path / name).mkdir()
    messages = [{"role": "system", "content": "You are a careful coding agent. " * 100}]
    async with (
        start_webhook(tmp_path / "resent", redis_server.url, budgets) as resent,
        start_webhook(
            tmp_path / "whole", redis_server.url, budgets, flush=False, message_cache_entries=0
        ) as whole,
    ):
        costs = []
        for turn in range(30):
            messages += [
                {"role": "user", "content": f"Step {turn}: fix the [failing] test. " * 20},
                {"role": "tool", "content": f'{{"output": "line {turn} ] ok"}} ' * 60},
                {"role": "assistant", "content": f"Done with step {turn}. " * 40},
            ]
            body = {"model": "gpt-4o", "messages": messages, "max_tokens": 300}
            answers = [await wh.check(body) for wh in (resent, whole)]
            assert [a.status for a in answers] == [200, 200]
            costs.append([a.headers["x-budget-estimated-cost-usd"] for a in answers])
        assert all(mine == theirs for mine, theirs in costs), costs
        assert resent.parts.checks.decider.resent_hits >= 20  # each turn past 16 KB
        assert whole.parts.checks.decider.resent_hits == 0
