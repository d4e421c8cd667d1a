"""gRPC ext_authz (envoy.service.auth.v3.Authorization/Check) decides as the HTTP check.

envoy-driver builds each CheckRequest as Envoy does (Envoy's own generated Go API);
the same request goes to the HTTP check listener, and the two answers must agree on
everything but the request id.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budget_guard.localservices import RedisServer
from tests.fixtures.envoy_driver import CheckResult, EnvoyDriver
from tests.fixtures.webhook import AGENT, Answer, RunningWebhook, budget, start_webhook

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
BUDGETS = [
    budget("acme", "10", tenant="acme"),
    budget("broke", "0.000001", tenant="broke"),
]
CASES: dict[str, dict[str, Any]] = {
    "allowed": {"headers": AGENT, "body": CHAT},
    "budget-exceeded": {"headers": {**AGENT, "x-budget-tenant": "broke"}, "body": CHAT},
    "no-identity": {"headers": {}, "body": CHAT},
    "not-json": {"headers": AGENT, "body": '{"model": "gpt-4o",', "json": True},
    "no-model": {"headers": AGENT, "body": {"messages": []}},
    "model-listing": {"headers": AGENT, "method": "GET", "path": "/v1/models"},
}


def _body_text(case: dict[str, Any]) -> str | None:
    body = case.get("body")
    return body if body is None or isinstance(body, str) else json.dumps(body)


async def _http(wh: RunningWebhook, case: dict[str, Any], request_id: str) -> Answer:
    body = _body_text(case)
    headers = {**case["headers"], "x-request-id": request_id, "content-type": "application/json"}
    return await wh.check(
        headers=headers,
        method=case.get("method", "POST"),
        path=case.get("path", "/v1/chat/completions"),
        data=body.encode() if body is not None else None,
    )


async def _grpc(
    wh: RunningWebhook, driver: EnvoyDriver, case: dict[str, Any], request_id: str
) -> CheckResult:
    check: dict[str, Any] = {
        "name": request_id,
        "method": case.get("method", "POST"),
        "path": case.get("path", "/v1/chat/completions"),
        "headers": [
            [name, value] for name, value in {**case["headers"], "x-request-id": request_id}.items()
        ],
        "with_request_body": {"max_request_bytes": 1 << 20, "allow_partial_message": True},
    }
    body = _body_text(case)
    if body is not None:
        check["body"] = body
    report = await driver.ext_authz(wh.ext_proc_target, [check])
    (result,) = report.checks
    assert result.errors == [], result.errors
    return result


def _without_ids(raw: bytes, request_id: str) -> Any:
    return json.loads(raw.decode().replace(request_id, "<id>")) if raw else None


@pytest.mark.parametrize("case", CASES)
async def test_grpc_and_http_checks_give_the_same_decision(
    tmp_path: Path, redis_server: RedisServer, envoy_driver: EnvoyDriver, case: str
) -> None:
    spec = CASES[case]
    async with start_webhook(tmp_path, redis_server.url, BUDGETS, ext_proc=True) as wh:
        http = await _http(wh, spec, "http-1")
        grpc = await _grpc(wh, envoy_driver, spec, "grpc-1")
    summary = grpc.summary
    assert summary is not None
    assert summary.allowed == (http.status == 200)
    if http.status == 200:
        upstream = {option.name: option.value for option in summary.upstream_headers}
        expected = {
            name: value for name, value in http.headers.items() if name.startswith("x-budget-")
        }
        # The second check reserved after the first: its room is the first's less its cost.
        if "x-budget-remaining-usd" in expected:
            room = Decimal(expected.pop("x-budget-remaining-usd"))
            cost = Decimal(upstream["x-budget-estimated-cost-usd"])
            assert Decimal(upstream.pop("x-budget-remaining-usd")) == room - cost
        assert upstream == {**expected, "x-budget-request-id": "grpc-1"}
        assert all(
            o.append_action == "OVERWRITE_IF_EXISTS_OR_ADD" for o in summary.upstream_headers
        )
        return
    assert summary.kind == "denied_response"
    assert summary.denied_status == http.status
    assert _without_ids(summary.denied_body.data, "grpc-1") == _without_ids(http.body, "http-1")
    denied = {option.name: option.value for option in summary.denied_headers}
    assert denied["content-type"] == "application/json"
    if "retry-after" in http.headers:
        assert denied["retry-after"] == http.headers["retry-after"]


async def test_dynamic_metadata_carries_the_estimate_and_budget_for_access_logs(
    tmp_path: Path, redis_server: RedisServer, envoy_driver: EnvoyDriver
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS, ext_proc=True) as wh:
        allowed = await _grpc(wh, envoy_driver, CASES["allowed"], "a-1")
        denied = await _grpc(wh, envoy_driver, CASES["budget-exceeded"], "d-1")
    assert allowed.summary is not None and denied.summary is not None
    metadata = allowed.summary.dynamic_metadata
    assert metadata["decision"] == "allow"
    assert metadata["request_id"] == "a-1"
    assert metadata["budget"] == "default/acme"
    assert float(metadata["estimated_cost_usd"]) > 0
    assert denied.summary.dynamic_metadata["reason"] == "budget_exceeded"
    assert denied.summary.dynamic_metadata["budget"] == "default/broke"


async def test_strip_headers_become_headers_to_remove(
    tmp_path: Path, redis_server: RedisServer, envoy_driver: EnvoyDriver
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, BUDGETS, ext_proc=True, strip_headers=("x-budget-user",)
    ) as wh:
        result = await _grpc(wh, envoy_driver, CASES["allowed"], "s-1")
    assert result.summary is not None
    assert result.summary.headers_to_remove == ["x-budget-user", "x-budget-model-override"]
    names = {option.name for option in result.summary.upstream_headers}
    assert "x-envoy-auth-headers-to-remove" not in names
