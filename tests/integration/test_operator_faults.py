"""The operator under faults, as real processes (operator, webhook, kube-apiserver,
redis-server): Redis flushed mid-period, the operator killed and the API server
restarted, a Redis URL that does not answer. Each notice is said once; spend never
goes down; the budgets say what is wrong and recover by themselves."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer, RedisServer
from budget_guard.localservices.processes import free_port
from tests.fixtures.operator import (
    Cluster,
    after_failed_turns,
    after_syncs,
    alert_receiver,
    eventually,
    logged_times,
    running_operator,
)
from tests.fixtures.webhook import enforced_by, spend, start_published_webhook

pytestmark = [pytest.mark.kube, pytest.mark.redis]

USERS = 10


@pytest.fixture
def cluster(crds: KubeAPIServer) -> Cluster:
    return Cluster.fresh(crds, "fault")


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any]:
    return cluster.condition("llmbudgets", name, kind)


def config_map(cluster: Cluster, name: str) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{cluster.namespace}/configmaps/{name}"
    status, answer = cluster.kube.request("GET", path)
    return dict(answer) if status == 200 else {}


async def user_spend(redis: Redis, budget_id: str) -> dict[str, int]:
    """Each user's settled spend, as the per-user counters in Redis hold it."""
    found = {}
    async for key in redis.scan_iter(match=f"*:c:{budget_id}:*:u:*"):
        spent = await redis.hget(key, "spent")
        found[key.decode().rsplit(":u:", 1)[1]] = int(spent or 0)
    return found


async def outbox(redis: Redis) -> dict[bytes, bytes]:
    """Alerts acknowledged and not yet delivered (see operator/events.py)."""
    return dict(await redis.hgetall("bg:{global}:operator:outbox"))


def user_cost(n: int) -> str:
    return f"{Decimal('0.01') * (n + 1):.2f}"  # u0 spends $0.01 ... u8 $0.09; u9 below


async def test_a_flush_mid_period_restores_budget_user_and_pool_counters(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    cluster.budget("acme", "1.00", scope={"tenant": "acme"}, thresholds=[70, 80])
    cluster.budget("seats", "0.10", scope={"tenant": "seats", "user": "*"})
    cluster.budget("launch", "0.10", scope={"tenant": "launch"})
    cluster.launch_week("launch", "0.20", now)
    seats_id = f"{cluster.namespace}/seats"
    with running_operator(cluster, redis_server.url, tmp_path / "op") as operator:
        await eventually(lambda: all(cluster.ready(n) for n in ("acme", "seats", "launch")))
        async with start_published_webhook(tmp_path / "wh", redis_server.url) as wh:
            await enforced_by(wh, "acme", "seats", "launch")
            assert await spend(wh, "acme", "0.85", "a1") == 200
            for n in range(USERS - 1):
                assert await spend(wh, "seats", user_cost(n), f"s{n}", f"u{n}") == 200
            assert await spend(wh, "seats", "0.10", "s-full", "u9") == 200  # u9: its quota
            assert await spend(wh, "seats", "0.01", "s-over", "u9") != 200
            assert await spend(wh, "launch", "0.10", "l1") == 200  # the budget is spent
            assert await spend(wh, "launch", "0.15", "l2") == 200  # the pool takes it
            before = await user_spend(redis_client, seats_id)
            assert len(before) == USERS and before["u9"] == 100_000
            checkpoint = await eventually(
                lambda: config_map(cluster, "seats.spend"),
                lambda found: found.get("data", {}).get("users") == str(USERS),
                what="a checkpoint of every user",
            )
            assert checkpoint["metadata"]["ownerReferences"][0]["name"] == "seats"
            await eventually(
                lambda: cluster.status("burstbudgets", "launch-week").get("spent"),
                lambda spent: spent == "0.15",
                what="the pool's usage recorded",
            )
            await eventually(
                lambda: cluster.status("llmbudgets", "acme").get("spent"),
                lambda spent: spent == "0.85",
                what="acme's spend recorded",
            )

            await redis_client.flushall()  # Redis lost everything, mid-period

            for name in ("acme", "seats"):
                await eventually(
                    lambda name=name: cluster.reasons(name),  # type: ignore[misc]
                    lambda reasons: "LedgerRestored" in reasons,
                    what=f"{name} restored",
                )
            await eventually(
                lambda: cluster.reasons("launch-week"),
                lambda reasons: "LedgerRestored" in reasons,
                what="the pool restored",
            )
            assert await user_spend(redis_client, seats_id) == before  # to the micro-dollar
            await enforced_by(wh, "acme", "seats", "launch")
            assert await spend(wh, "seats", "0.01", "s-again", "u9") != 200  # still spent
            assert await spend(wh, "seats", "0.01", "s-more", "u0") == 200  # u0: $0.02 now
            assert await spend(wh, "launch", "0.05", "l3") == 200  # the pool's last $0.05
            assert await spend(wh, "acme", "0.02", "a2") == 200
            await after_syncs(operator)
            assert cluster.status("llmbudgets", "acme")["spent"] == "0.87"
            pool = cluster.status("burstbudgets", "launch-week")
            assert (pool["spent"], pool["phase"]) == ("0.20", "Exhausted"), pool
            after = await user_spend(redis_client, seats_id)
            assert after == {**before, "u0": before["u0"] + 10_000}
            reasons = cluster.reasons("acme")
            assert reasons.count("SoftLimitReached") == 2, reasons  # 70 and 80, not again
            assert reasons.count("LedgerRestored") == 1


async def test_operator_killed_and_api_server_restarted_say_each_notice_once(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    kube = cluster.kube
    async with (
        alert_receiver() as receiver,
        start_published_webhook(tmp_path / "wh", redis_server.url) as wh,
    ):
        cluster.secret("alerts", {"url": receiver.url})
        cluster.budget(
            "acme",
            "1.00",
            scope={"tenant": "acme"},
            thresholds=[70, 80, 90],
            alerts={"secretRef": {"name": "alerts"}, "format": "Generic"},
        )
        with running_operator(cluster, redis_server.url, tmp_path / "op1") as first:
            await eventually(lambda: cluster.ready("acme"), what="acme Ready")
            await enforced_by(wh, "acme")
            assert await spend(wh, "acme", "0.72", "r1") == 200  # 70 %
            await eventually(lambda: len(receiver.received) == 1, what="the 70 % alert")
            # Its 2xx back and the outbox emptied (killed before that, the next leader
            # sends it again with the same id: docs/operator.md, "Events and alerts").
            await eventually(lambda: outbox(redis_client), lambda box: box == {}, what="sent")
            first.kill()  # SIGKILL: no clean-up, no leaving the peering
        assert await spend(wh, "acme", "0.10", "r2") == 200  # 80 %, while no operator runs
        kube.restart_apiserver()
        with running_operator(cluster, redis_server.url, tmp_path / "op2") as second:
            await eventually(lambda: len(receiver.received) == 2, within=60, what="80 % alert")
            refused = "(SoftLimitReached) not posted"
            refused_before = logged_times(second, refused)
            await asyncio.to_thread(kube.stop_apiserver)
            assert await spend(wh, "acme", "0.09", "r3") == 200  # 90 %, the API server away
            await eventually(  # the operator tries to say it, and is refused, twice
                lambda: logged_times(second, refused),
                lambda tries: tries >= refused_before + 2,
                within=30,
                what="the 90 % Event tried and refused twice",
            )
            kube.start_apiserver()
            await eventually(lambda: len(receiver.received) == 3, within=60, what="90 % alert")
            await eventually(lambda: outbox(redis_client), lambda box: box == {}, what="sent")
            second.kill()
        with running_operator(cluster, redis_server.url, tmp_path / "op3") as third:
            await eventually(lambda: cluster.ready("acme"), what="acme Ready again")
            await after_syncs(third, 3)
    events = [e for e in cluster.events("acme") if e["reason"] == "SoftLimitReached"]
    assert sorted(e["message"].split("%")[0] for e in events) == ["70", "80", "90"]
    assert all(e["count"] == 1 and e["metadata"]["name"].startswith("acme.") for e in events)
    assert [a["threshold"] for a in receiver.received] == [70, 80, 90]
    assert len({a["id"] for a in receiver.received}) == 3
    assert {a["id"] for a in receiver.received} == {e["metadata"]["name"] for e in events}


async def test_a_redis_url_that_does_not_answer_is_said_on_the_budgets(
    cluster: Cluster, tmp_path: Path
) -> None:
    port = free_port()
    url = f"redis://guard:s3cret@127.0.0.1:{port}/0"
    cluster.budget("acme", "1.00", scope={"tenant": "acme"})
    cluster.budget("mars", "1.00", scope={"tenant": "mars"}, timeZone="Mars/Olympus_Mons")
    with running_operator(cluster, url, tmp_path / "op") as operator:
        unavailable = await eventually(
            lambda: condition(cluster, "acme", "Ready"),
            lambda cond: cond.get("reason") == "LedgerUnavailable",
            what="Ready False, LedgerUnavailable",
        )
        assert unavailable["status"] == "False"
        assert f"redis://guard:***@127.0.0.1:{port}/0" in unavailable["message"]
        assert "s3cret" not in unavailable["message"]
        assert "Connect" in unavailable["message"]  # the error (connection refused)
        enforced = condition(cluster, "acme", "Enforced")
        assert (enforced["status"], enforced["reason"]) == ("False", "LedgerUnavailable")
        assert condition(cluster, "acme", "Accepted")["status"] == "True"
        rejected = await eventually(  # validation needs no Redis
            lambda: condition(cluster, "mars", "Accepted"), lambda cond: bool(cond)
        )
        assert (rejected["status"], rejected["reason"]) == ("False", "InvalidTimeZone")
        table = cluster.kube.kubectl("get", "llmb", "-n", cluster.namespace, "acme")
        assert "LedgerUnavailable" in table.stdout, table.stdout
        # Two more tries while Redis stays away: each could have said it again.
        await after_failed_turns(operator, 2)
        warnings = [e for e in cluster.events("acme") if e["reason"] == "LedgerUnavailable"]
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert "s3cret" not in " ".join(operator.log_lines())
        down_lines = [  # ours: Kopf's debug lines quote whole objects, their status too
            line
            for line in operator.log_lines()
            if "cannot be reached" in line and '"logger": "budget_guard.' in line
        ]
        assert len(down_lines) == 1, down_lines
        assert not operator.logged("Traceback")

        user = ["--user", "guard", "on", ">s3cret", "~*", "&*", "+@all"]
        redis = RedisServer(workdir=tmp_path / "redis", extra_args=user)
        try:
            redis.start(port)
            await eventually(lambda: cluster.ready("acme"), within=30, what="acme Ready")
            enforced = condition(cluster, "acme", "Enforced")
            assert (enforced["status"], enforced["reason"]) == ("True", "Published")
            assert cluster.status("llmbudgets", "acme")["summary"] == "Ok"
            assert operator.logged("answers again")
        finally:
            redis.stop()
        assert not operator.logged("Traceback")
