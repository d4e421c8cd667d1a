"""Tokens and tenancy on the API port, on a real webhook and Redis: a tenant's token
settles, checks and reads only its tenants' requests and budgets; an admin token (and
the shared usage token) sees all; the token sources are re-read (rotation, revocation)
and a malformed one is refused at start-up and ignored, loudly, when rewritten."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from budget_guard.client import BudgetGuard, RemoteBackend, RequestRefused
from budget_guard.localservices import (
    RedisClusterSet,
    RedisServer,
    ServiceStartError,
    WebhookProcess,
)
from budget_guard.webhook.settings import WebhookSettings
from budget_guard.webhook.wiring import build_webhook
from tests.fixtures.webhook import (
    USAGE_TOKEN,
    Answer,
    Clock,
    RunningWebhook,
    budget,
    start_webhook,
)
from tests.waiting import eventually

pytestmark = pytest.mark.redis

ACME_TOKEN = "acme-token-0123456789abcdef"
BETA_TOKEN = "beta-token-0123456789abcdef"
OPS_TOKEN = "ops-token-0123456789abcdef00"
CHAT = {"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
BUDGETS = [
    budget("acme", "10", tenant="acme"),
    budget("beta", "10", tenant="beta"),
    budget("everyone", "100"),
]


@pytest.fixture(params=["redis-server", "redis-cluster"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """A single redis-server, or a Redis Cluster (whose ledger reads a request's tenant
    from the {global} part of its reservation): tenancy must hold on both. The webhook
    fixture empties either before the test."""
    if request.param == "redis-server":
        return cast(RedisServer, request.getfixturevalue("redis_server")).url
    return cast(RedisClusterSet, request.getfixturevalue("redis_cluster")).cluster_url


def token_list(path: Path, tokens: dict[str, tuple[str, Any]]) -> Path:
    """The YAML form: name -> (token, tenants)."""
    listed = [
        {"name": name, "token": token, "tenants": tenants}
        for name, (token, tenants) in tokens.items()
    ]
    path.write_text(yaml.safe_dump({"tokens": listed}))
    return path


def acme_and_beta(path: Path) -> Path:
    return token_list(
        path,
        {"acme-app": (ACME_TOKEN, ["acme"]), "beta-app": (BETA_TOKEN, ["beta"]),
         "ops": (OPS_TOKEN, "*")},
    )  # fmt: skip


def headers_of(tenant: str, request_id: str) -> dict[str, str]:
    return {"x-budget-tenant": tenant, "x-budget-user": "u1", "x-request-id": request_id}


async def reserve(wh: RunningWebhook, tenant: str, request_id: str) -> None:
    assert (await wh.check(CHAT, headers=headers_of(tenant, request_id))).status == 200


async def standing(wh: RunningWebhook, name: str) -> dict[str, str]:
    """A budget's counters, as the admin reads them."""
    budgets = (await wh.api("/v1/budgets")).json()["budgets"]
    (found,) = [b for b in budgets if b["name"] == name]
    return {key: found[key] for key in ("spentUsd", "reservedUsd", "requests")}


async def check_call(wh: RunningWebhook, token: str, tenant: str, request_id: str) -> Answer:
    call = {"path": "/v1/chat/completions", "headers": headers_of(tenant, request_id), "body": CHAT}
    headers = {"authorization": f"Bearer {token}"}
    async with wh.session.post(wh.api_url + "/v1/check", json=call, headers=headers) as answer:
        return Answer(answer.status, answer.headers, await answer.read())


async def test_a_tenant_token_cannot_settle_another_tenants_request(
    tmp_path: Path, ledger_url: str
) -> None:
    tokens = acme_and_beta(tmp_path / "tokens.yaml")
    async with start_webhook(tmp_path, ledger_url, BUDGETS, api_tokens=tokens) as wh:
        await reserve(wh, "beta", "beta-1")
        await reserve(wh, "acme", "acme-1")
        before = await standing(wh, "beta")

        refused = await wh.settle({"request_id": "beta-1", "cost_usd": "0"}, token=ACME_TOKEN)
        assert refused.status == 403
        assert refused.error["code"] == "forbidden_tenant"
        assert "'beta-1' is not of a tenant this token acts for (acme)" in refused.error["message"]
        assert "beta" not in refused.error["message"].replace("beta-1", "")  # no tenant named
        # A batch with one foreign report is refused whole: its own report is not settled.
        batch = [{"request_id": "acme-1", "cost_usd": "0.01"},
                 {"request_id": "beta-1", "cost_usd": "0"}]  # fmt: skip
        assert (await wh.settle(batch, token=ACME_TOKEN)).status == 403
        assert await standing(wh, "beta") == before
        assert (await standing(wh, "acme"))["spentUsd"] == "0.00"

        # A request id that was never reserved is unknown to a tenant token, as to anyone.
        unknown = await wh.settle({"request_id": "nobody", "cost_usd": "1"}, token=ACME_TOKEN)
        assert (unknown.status, unknown.json()["status"]) == (404, "unknown_request_id")

        # Its own tenant's token settles it, untouched by the refusals: first settlement.
        own = await wh.settle({"request_id": "beta-1", "cost_usd": "0.02"}, token=BETA_TOKEN)
        assert (own.status, own.json().get("status")) == (200, "settled"), own.json()
        mine = await wh.settle({"request_id": "acme-1", "cost_usd": "0.01"}, token=ACME_TOKEN)
        assert (mine.status, mine.json()["status"]) == (200, "settled")
        assert (await standing(wh, "beta"))["spentUsd"] == "0.02"

        # The admin token and the shared usage token settle any tenant's request.
        await reserve(wh, "beta", "beta-2")
        await reserve(wh, "acme", "acme-2")
        ops = await wh.settle({"request_id": "beta-2", "cost_usd": "0.03"}, token=OPS_TOKEN)
        shared = await wh.settle({"request_id": "acme-2", "cost_usd": "0.04"}, token=USAGE_TOKEN)
        assert ops.json()["status"] == shared.json()["status"] == "settled"

        # A batch of its own tenant's requests (and an unknown id) is settled item by item.
        await reserve(wh, "beta", "beta-3")
        await reserve(wh, "beta", "beta-4")
        own_batch = [{"request_id": rid, "cost_usd": "0.01"} for rid in ("beta-3", "x", "beta-4")]
        answer = await wh.settle(own_batch, token=BETA_TOKEN)
        statuses = [item["status"] for item in answer.json()["results"]]
        assert statuses == ["settled", "unknown_request_id", "settled"]


async def test_a_tenant_token_reads_only_its_tenants(tmp_path: Path, ledger_url: str) -> None:
    tokens = acme_and_beta(tmp_path / "tokens.yaml")
    now = Clock(dt.datetime(2030, 11, 20, 12, 0, tzinfo=dt.UTC))
    async with start_webhook(
        tmp_path, ledger_url, BUDGETS, api_tokens=tokens, local_leases=False, clock=now
    ) as wh:
        for tenant, request_id, cost in (("acme", "a1", "1.25"), ("beta", "b1", "3.00")):
            await reserve(wh, tenant, request_id)
            assert (await wh.settle({"request_id": request_id, "cost_usd": cost})).status == 200

        seen = (await wh.api("/v1/budgets", token=ACME_TOKEN)).json()
        assert [b["name"] for b in seen["budgets"]] == ["acme"]  # not beta, not everyone's
        assert seen["rejected"] == []
        every = (await wh.api("/v1/budgets", token=OPS_TOKEN)).json()["budgets"]
        assert sorted(b["name"] for b in every) == ["acme", "beta", "everyone"]

        assert (await wh.api("/v1/budgets/default/acme", token=ACME_TOKEN)).status == 200
        other = await wh.api("/v1/budgets/default/beta", token=ACME_TOKEN)
        tenantless = await wh.api("/v1/budgets/default/everyone", token=ACME_TOKEN)
        assert other.status == tenantless.status == 404
        assert other.error["code"] == "unknown_budget"
        assert (await wh.api("/v1/budgets/default/beta", token=OPS_TOKEN)).status == 200

        day = "from=2030-11-01&to=2030-11-30"
        mine = (await wh.api(f"/v1/spend?{day}&groupBy=tenant", token=ACME_TOKEN)).json()
        assert [(row["tenant"], row["costUsd"]) for row in mine["rows"]] == [("acme", "1.25")]
        asked = await wh.api(f"/v1/spend?{day}&tenant=beta", token=ACME_TOKEN)
        assert asked.status == 403 and asked.error["code"] == "forbidden_tenant"
        admin = (await wh.api(f"/v1/spend?{day}&groupBy=tenant", token=OPS_TOKEN)).json()
        assert admin["totalUsd"] == "4.25"

        for path in ("/v1/budgets", "/v1/spend?" + day, "/v1/budgets/default/acme"):
            assert (await wh.api(path, token=None)).status == 401
            assert (await wh.api(path, token="not-a-known-token-at-all")).status == 401
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert (await wh.api(path, token=None)).status == 200


async def test_a_tenant_token_checks_only_its_tenants_requests(
    tmp_path: Path, ledger_url: str
) -> None:
    tokens = acme_and_beta(tmp_path / "tokens.yaml")
    async with start_webhook(tmp_path, ledger_url, BUDGETS, api_tokens=tokens) as wh:
        before = await standing(wh, "beta")
        refused = await check_call(wh, ACME_TOKEN, "beta", "c-beta")
        assert refused.status == 403 and refused.error["code"] == "forbidden_tenant"
        assert await standing(wh, "beta") == before
        allowed = await check_call(wh, ACME_TOKEN, "acme", "c-acme")
        assert allowed.status == 200 and allowed.json()["status"] == 200
        assert (await check_call(wh, OPS_TOKEN, "beta", "c-ops")).json()["status"] == 200


async def test_rotation_revocation_and_a_malformed_rewrite(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = acme_and_beta(tmp_path / "tokens.yaml")
    rotated = "acme-token-rotated-9876543210"
    async with start_webhook(tmp_path, redis_server.url, BUDGETS, api_tokens=tokens) as wh:
        assert (await wh.api("/v1/budgets", token=ACME_TOKEN)).status == 200
        token_list(tokens, {"acme-app": (rotated, ["acme"]), "ops": (OPS_TOKEN, "*")})

        async def rotated_in() -> bool:
            return (await wh.api("/v1/budgets", token=rotated)).status == 200

        await eventually(rotated_in, within=5, what="the rotated token accepted")
        assert (await wh.api("/v1/budgets", token=ACME_TOKEN)).status == 401  # old one
        assert (await wh.api("/v1/budgets", token=BETA_TOKEN)).status == 401  # revoked

        with caplog.at_level(logging.ERROR, logger="budget_guard.webhook.api_tokens"):
            tokens.write_text("tokens: [{name: acme-app, token: short, tenants: [acme]}]\n")

            async def complained() -> bool:
                await wh.api("/v1/budgets", token=rotated)
                return "the last good set stays in force" in caplog.text

            await eventually(complained, within=5, what="the malformed rewrite logged")
        assert "token must be a text of at least 16 chars" in caplog.text
        assert "short" not in caplog.text.replace("shorter", "")  # a token is never logged
        assert (await wh.api("/v1/budgets", token=rotated)).status == 200  # last good set


def secret_mount(directory: Path, token: str, tenants: str, version: str) -> None:
    """A token Secret as the kubelet mounts it: the keys are links through ``..data`` to
    a timestamped directory, swapped in one rename when the Secret changes."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"..{version}"
    data.mkdir()
    (data / "token").write_text(token)
    (data / "tenants").write_text(tenants)
    link = directory / "..data_tmp"
    link.symlink_to(data.name)
    os.replace(link, directory / "..data")
    for key in ("token", "tenants"):
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")


async def test_a_directory_of_mounted_secrets(tmp_path: Path, redis_server: RedisServer) -> None:
    mounted = tmp_path / "api-tokens"
    secret_mount(mounted / "acme-app", ACME_TOKEN, "acme\n", "2026_12_01_1")
    secret_mount(mounted / "ops", OPS_TOKEN, "*", "2026_12_01_1")
    async with start_webhook(tmp_path, redis_server.url, BUDGETS, api_tokens=mounted) as wh:
        acme = (await wh.api("/v1/budgets", token=ACME_TOKEN)).json()["budgets"]
        assert [b["name"] for b in acme] == ["acme"]
        assert len((await wh.api("/v1/budgets", token=OPS_TOKEN)).json()["budgets"]) == 3

        # The Secret is updated: acme's application may now act for beta too.
        secret_mount(mounted / "acme-app", ACME_TOKEN, "acme,beta", "2026_12_01_2")

        async def widened() -> bool:
            answer = await wh.api("/v1/budgets", token=ACME_TOKEN)
            return [b["name"] for b in answer.json()["budgets"]] == ["acme", "beta"]

        await eventually(widened, within=5, what="the widened Secret read")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tokens: {}", "expected 'tokens:', a list of {name, token, tenants}"),
        ("tokens: [{name: a, token: 0123456789abcdef0}]", "tenants is required"),
        ("tokens: [{name: a, token: 0123456789abcdef0, tenants: []}]", "tenants is empty"),
        ("tokens: [{name: a, token: 0123456789abcdef0, tenants: ['no way']}]", "not a tenant"),
        ("tokens: [{name: a, token: tiny, tenants: '*'}]", "at least 16 chars"),
        ("tokens: [{name: a, token: 0123456789abcdef0, tenants: '*', admin: 1}]", "'admin'"),
        (
            "tokens: [{name: a, token: 0123456789abcdef0, tenants: '*'}, "
            "{name: b, token: 0123456789abcdef0, tenants: [x]}]",
            "'b' has the same token as 'a'",
        ),
        ("tokens: [", "cannot be read as YAML"),
    ],
)
def test_a_malformed_token_file_stops_the_start(
    tmp_path: Path, redis_server: RedisServer, content: str, message: str
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(content)
    settings = WebhookSettings.from_args(
        ["--redis-url", redis_server.url, "--api-tokens", str(tokens)]
    )
    with pytest.raises(SystemExit, match="the API tokens cannot be used") as stopped:
        build_webhook(settings)
    assert message in str(stopped.value) and str(tokens) in str(stopped.value)


def test_the_process_says_why_it_will_not_start(tmp_path: Path, redis_server: RedisServer) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(ServiceStartError, match=r"the API tokens cannot be used: .*no-such-dir"):
        WebhookProcess(
            ["--redis-url", redis_server.url, "--api-tokens", str(missing)],
            workdir=tmp_path,
            start_timeout_seconds=20,
        ).start()


async def test_an_api_body_past_the_limit_is_413_in_json(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    huge = json.dumps([{"request_id": f"r{i}", "cost_usd": "0.000001"} for i in range(200_000)])
    headers = {"authorization": f"Bearer {USAGE_TOKEN}", "content-type": "application/json"}
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        for path in ("/v1/usage", "/v1/check"):
            body = io.BytesIO(huge.encode())
            async with wh.session.post(wh.api_url + path, data=body, headers=headers) as answer:
                assert answer.status == 413
                error = (await answer.json())["error"]
        assert error["code"] == "body_too_large"
        assert "4194304 bytes" in error["message"]


async def test_the_client_library_with_a_tenant_token(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    tokens = acme_and_beta(tmp_path / "tokens.yaml")
    async with start_webhook(tmp_path, redis_server.url, BUDGETS, api_tokens=tokens) as wh:
        own = BudgetGuard(RemoteBackend(wh.api_url, ACME_TOKEN), tenant="acme", user="u1")
        other = own.with_identity(tenant="beta")
        try:
            async with own.call(CHAT) as call:
                call.record({"prompt_tokens": 12, "completion_tokens": 3})
            assert call.charged_micros > 0
            with pytest.raises(RequestRefused) as refused:
                async with other.call(CHAT):
                    pass
            assert (refused.value.status, refused.value.code) == (403, "forbidden_tenant")
        finally:
            await own.aclose()
        assert (await standing(wh, "beta"))["requests"] == 0


async def test_while_redis_is_down_a_tenant_token_settles_only_what_it_can_prove(
    tmp_path: Path,
) -> None:
    tokens = acme_and_beta(tmp_path / "tokens.yaml")
    with RedisServer() as redis:
        async with start_webhook(
            tmp_path, redis.url, BUDGETS, api_tokens=tokens, local_leases=False
        ) as wh:
            await reserve(wh, "acme", "before")  # reserved in Redis, before the outage
            redis.stop_process()
            await reserve(wh, "acme", "while-down")  # failed open: in the journal
            await reserve(wh, "beta", "beta-down")

            journaled = await wh.settle({"request_id": "while-down", "cost_usd": "0.01"},
                                        token=ACME_TOKEN)  # fmt: skip
            assert (journaled.status, journaled.json()["status"]) == (202, "accepted")
            foreign = await wh.settle({"request_id": "beta-down", "cost_usd": "0"},
                                      token=ACME_TOKEN)  # fmt: skip
            assert foreign.status == 403
            # Whose "before" is cannot be read while Redis is away: retry, nothing settled.
            unread = await wh.settle({"request_id": "before", "cost_usd": "0"}, token=ACME_TOKEN)
            assert (unread.status, unread.json()["status"]) == (503, "ledger_unavailable")
