"""Config off the hot path: file reloads in standalone mode, the published document in
cluster mode; a bad config never replaces a good one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis

from budget_guard.localservices import RedisServer
from budget_guard.store.published_config import PublishedConfigStore
from tests.fixtures.webhook import RunningWebhook, budget, start_webhook, write_budgets
from tests.waiting import eventually

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
TINY, ROOMY = "0.000001", "100"


async def until_version_changes(wh: RunningWebhook, old: str | None) -> str:
    config = await eventually(
        lambda: wh.parts.config.current,
        lambda current: current is not None and current.version != old,
        what="a new config version",
    )
    assert config is not None
    return str(config.version)


async def test_edited_budget_files_apply_without_a_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, [budget("acme", TINY, tenant="acme")]
    ) as wh:
        assert (await wh.check(CHAT)).status == 429
        version = wh.parts.config.current.version
        write_budgets(tmp_path / "budgets", [budget("acme", ROOMY, tenant="acme")])
        await until_version_changes(wh, version)
        assert (await wh.check(CHAT)).status == 200


async def test_an_invalid_file_keeps_the_previous_config_and_says_why(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, [budget("acme", TINY, tenant="acme")]
    ) as wh:
        version = wh.parts.config.current.version
        broken = budget("acme", "-5", tenant="acme")
        (tmp_path / "budgets" / "budgets.yaml").write_text(yaml.safe_dump(broken))
        error = await eventually(lambda: wh.parts.config.last_error, what="a config error")
        assert "spec.limit: must be positive" in error
        assert "budgets.yaml: document 1 (LLMBudget acme)" in wh.parts.config.last_error
        assert wh.parts.config.current.version == version
        assert (await wh.check(CHAT)).status == 429  # the previous budgets still hold
        ready = (await wh.api("/readyz")).json()
        assert ready["status"] == "ready"
        assert "must be positive" in ready["configError"]
        (tmp_path / "budgets" / "budgets.yaml").write_text("kind: LLMBudget\n  bad: [indent")
        await eventually(
            lambda: wh.parts.config.last_error or "",
            lambda error: "not valid YAML" in error,
            what="the YAML error",
        )
        assert wh.parts.config.current.version == version


async def test_cluster_mode_follows_the_published_config(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    client = Redis.from_url(redis_server.url)
    await client.flushdb()
    store = PublishedConfigStore(client)
    now = dt.datetime.now(dt.UTC).isoformat()
    async with start_webhook(tmp_path, redis_server.url, standalone=False, flush=False) as wh:
        assert (await wh.check(CHAT)).status == 503  # nothing published yet: cannot decide
        assert "no config published" in (await wh.api("/readyz")).json()["problems"][0]
        version, changed = await store.publish([budget("acme", TINY, tenant="acme")], [], now)
        assert changed
        assert await until_version_changes(wh, None) == version
        assert (await wh.check(CHAT)).status == 429
        again, changed = await store.publish([budget("acme", TINY, tenant="acme")], [], now)
        assert (again, changed) == (version, False)
        roomy, _ = await store.publish([budget("acme", ROOMY, tenant="acme")], [], now)
        assert await until_version_changes(wh, version) == roomy  # via pub/sub, no restart
        assert (await wh.check(CHAT)).status == 200
    await client.aclose()


async def test_budgets_view(tmp_path: Path, redis_server: RedisServer) -> None:
    budgets = [
        budget("acme", "10", tenant="acme", period="Weekly", timeZone="Asia/Kolkata"),
        budget("pro", "5", user="*", tier="pro"),
        budget("dup", "20", tenant="acme", period="Weekly"),
    ]
    async with start_webhook(tmp_path, redis_server.url, budgets) as wh:
        await wh.check(CHAT)
        document = (await wh.api("/v1/budgets")).json()
        acme = next(b for b in document["budgets"] if b["name"] == "acme")
        assert acme["period"] == "Weekly"
        assert acme["timeZone"] == "Asia/Kolkata"
        assert float(acme["reservedUsd"]) > 0
        assert acme["status"] == "Ok"
        pro = next(b for b in document["budgets"] if b["name"] == "pro")
        assert pro["usersTracked"] == 1
        assert pro["topUsers"][0]["user"] == "agent-7"
        (rejected,) = document["rejected"]
        assert rejected["reason"] == "DuplicateScope"
        openapi = (await wh.api("/openapi.json")).json()
        assert openapi["openapi"].startswith("3.")
        assert set(openapi["paths"]) == {
            "/v1/usage",
            "/v1/check",
            "/v1/budgets",
            "/v1/spend",
            "/v1/budgets/{namespace}/{name}",
            "/healthz",
            "/readyz",
            "/metrics",
        }
        assert (await wh.api("/healthz")).status == 200
