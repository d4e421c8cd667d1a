"""The real openai and anthropic SDKs read a spent budget's 429 as theirs: their own
RateLimitError, with our message and request id, after exactly one request.

Between the SDK and the check listener stands a small gateway written here that does
what Envoy's HTTP ext_authz filter does: it sends each request to the check (method,
path, headers, body), passes a deny (status, body, headers but ``authorization``) to
the client, and on an allow answers as a provider would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from budget_guard.localservices import RedisServer
from tests.fixtures.provider_answers import PROVIDERS
from tests.fixtures.webhook import AGENT, Clock, RunningWebhook, budget, start_webhook

pytestmark = pytest.mark.redis

BUDGETS = [budget("acme", "10", tenant="acme"), budget("broke", "0.000001", tenant="broke")]
BROKE = {**AGENT, "x-budget-tenant": "broke"}
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class EnvoyLikeGateway:
    """ext_authz in front of a provider that answers every allowed call the same way."""

    check_url: str
    session: aiohttp.ClientSession
    requests: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self.session.request(
            request.method, self.check_url + request.path_qs, headers=headers, data=body
        ) as check:
            check_body = await check.read()
            if check.status != 200:
                denied = {
                    k: v
                    for k, v in check.headers.items()
                    if k.lower() not in _HOP_BY_HOP | {"authorization", "date", "server"}
                }
                return web.Response(status=check.status, body=check_body, headers=denied)
        provider = "anthropic" if request.path.endswith("/messages") else "openai-chat"
        return web.json_response(PROVIDERS[provider]["plain"])


@contextlib.asynccontextmanager
async def gateway(wh: RunningWebhook) -> AsyncIterator[tuple[str, EnvoyLikeGateway]]:
    front = EnvoyLikeGateway(wh.check_url, wh.session)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", front.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", front
    finally:
        await runner.cleanup()


async def test_openai_sdk_raises_rate_limit_error_once_with_our_message(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A daily budget two seconds before its reset: a Retry-After the SDK would honour
    # (it does not retry past two minutes), so only x-should-retry keeps it from retrying.
    budgets = [
        budget("acme", "10", tenant="acme"),
        budget("broke", "0.000001", tenant="broke", period="Daily"),
    ]
    clock = Clock(dt.datetime(2026, 12, 1, 23, 59, 58, tzinfo=dt.UTC))
    async with (
        start_webhook(tmp_path, redis_server.url, budgets, clock=clock) as wh,
        gateway(wh) as (url, front),
        openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="sk-test", max_retries=3, default_headers=BROKE
        ) as client,
        openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key="sk-test", default_headers=AGENT
        ) as allowed,
    ):
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Hi"}],
                extra_headers={"x-request-id": "req-openai-1"},
            )
        error = raised.value
        assert front.requests == ["/v1/chat/completions"]  # no retry of a spent budget
        assert "Budget exceeded: tenant broke's daily budget 'default/broke'" in str(error)
        assert error.code == "budget_exceeded" and error.type == "budget_exceeded"
        assert error.param is None
        assert error.request_id == "req-openai-1"
        assert error.response.headers["retry-after"] == "2"

        completion = await allowed.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )
        assert completion.usage is not None and completion.usage.prompt_tokens == 1000


async def test_anthropic_sdk_raises_rate_limit_error_once_with_our_message(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with (
        start_webhook(tmp_path, redis_server.url, BUDGETS) as wh,
        gateway(wh) as (url, front),
        anthropic.AsyncAnthropic(
            base_url=url, api_key="sk-ant-test", max_retries=3, default_headers=BROKE
        ) as client,
    ):
        with pytest.raises(anthropic.RateLimitError) as raised:
            await client.messages.create(
                model="claude-sonnet-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "Hi"}],
                extra_headers={"x-request-id": "req-anthropic-1"},
            )
        error = raised.value
        assert front.requests == ["/v1/messages"]
        assert "Budget exceeded: tenant broke's monthly budget 'default/broke'" in str(error)
        assert error.request_id == "req-anthropic-1"
        body = error.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["budget"] == "default/broke"


async def test_gemini_paths_get_googles_resource_exhausted(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        denied = await wh.check(
            {"contents": [{"parts": [{"text": "Hi"}]}]},
            headers={**BROKE, "x-request-id": "req-gemini-1"},
            path="/v1beta/models/gemini-2.5-flash:generateContent",
        )
    assert denied.status == 429
    error = json.loads(denied.body)["error"]
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"].startswith("Budget exceeded: tenant broke's")
    (info,) = error["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "BUDGET_EXCEEDED" and info["domain"] == "budgetguard.io"
    assert info["metadata"]["budget"] == "default/broke"
    assert denied.headers["x-request-id"] == "req-gemini-1"
    assert denied.headers["x-should-retry"] == "false"
