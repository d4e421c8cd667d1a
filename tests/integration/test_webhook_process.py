"""The webhook as CI and Kubernetes run it: a process configured by environment variables,
logging JSON, stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from budget_guard.localservices import RedisServer, ServiceStartError, WebhookProcess
from tests.fixtures.webhook import AGENT, budget, write_budgets

pytestmark = pytest.mark.redis

SECRET_PROMPT = "TOP-SECRET-PROMPT-7f3a"


async def test_configured_by_environment_logs_json_and_never_the_prompt(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    budgets = write_budgets(tmp_path / "budgets", [budget("acme", "0.000001", tenant="acme")])
    token = tmp_path / "token"
    token.write_text("t0ken")
    env = {
        "BUDGET_GUARD_BUDGETS": str(budgets),
        "BUDGET_GUARD_REDIS_URL": redis_server.url,
        "BUDGET_GUARD_USAGE_TOKEN_FILE": str(token),
        "BUDGET_GUARD_LOG_ALLOWED": "true",
        "BUDGET_GUARD_LEDGER_TIMEOUT_MS": "250",
        "BUDGET_GUARD_GATEWAY_TIMEOUT_MS": "1000",
    }
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    with WebhookProcess([], env=env, workdir=tmp_path) as webhook:
        async with aiohttp.ClientSession() as session:
            url = webhook.check_url + "/v1/chat/completions"
            headers = {**AGENT, "x-request-id": "proc-1"}
            async with session.post(url, json=chat, headers=headers) as denied:
                assert denied.status == 429
            async with session.get(webhook.api_url + "/readyz") as ready:
                assert ready.status == 200
        exit_code = webhook.stop()
    assert exit_code == 0
    lines = webhook.log_lines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    denial = next(e for e in entries if e.get("decision") == "deny")
    assert denial["request_id"] == "proc-1"
    assert denial["component"] == "webhook"
    assert any("webhook stopping" in e["msg"] for e in entries)
    assert SECRET_PROMPT not in "\n".join(lines)


def test_bad_options_are_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(ServiceStartError, match=r"invalid choice: .magic."):
        WebhookProcess(["--identity", "magic"], workdir=tmp_path, start_timeout_seconds=10).start()
