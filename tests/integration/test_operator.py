"""The operator as a process against the real API server and Redis; spend through a
real webhook reading the config the operator published."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer, RedisServer
from budget_guard.store.published_config import PublishedConfigStore
from tests.fixtures.operator import (
    Cluster,
    after_syncs,
    alert_receiver,
    eventually,
    rfc3339,
    running_operator,
)
from tests.fixtures.webhook import enforced_by, spend, start_published_webhook

pytestmark = [pytest.mark.kube, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
THRESHOLDS = [70, 80, 90]


@pytest.fixture
def cluster(crds: KubeAPIServer) -> Cluster:
    return Cluster.fresh(crds)


async def test_a_budget_becomes_ready_and_its_status_follows_spend(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    cluster.budget("acme", "1.00", scope={"tenant": "acme"}, thresholds=THRESHOLDS)
    with running_operator(cluster, redis_server.url, tmp_path / "op") as operator:
        await eventually(lambda: cluster.ready("acme"), bool, what="acme Ready")
        status = cluster.status("llmbudgets", "acme")
        assert status["spent"] == "0.00"
        assert status["remaining"] == "1.00"
        assert status["state"] == "Ok"
        assert status["resetsAt"] > rfc3339(dt.datetime.now(dt.UTC))
        for cond in status["conditions"]:
            assert cond["observedGeneration"] == 1
        listed = cluster.kube.kubectl("get", "llmb", "-n", cluster.namespace)
        assert "tenant=acme" in listed.stdout and "Ok" in listed.stdout, listed.stdout

        async with start_published_webhook(tmp_path / "wh", redis_server.url) as wh:
            await enforced_by(wh, "acme")
            assert await spend(wh, "acme", "0.75", "r1") == 200
            soft = await eventually(
                lambda: cluster.condition("llmbudgets", "acme", "SoftLimitReached"),
                lambda cond: cond.get("status") == "True",
                what="SoftLimitReached",
            )
            assert soft["reason"] == "Threshold70Reached"
            await eventually(
                lambda: cluster.reasons("acme"),
                lambda reasons: "SoftLimitReached" in reasons,
                what="a SoftLimitReached Event",
            )
            assert cluster.status("llmbudgets", "acme")["spent"] == "0.75"

            assert await spend(wh, "acme", "0.30", "r2") == 200  # 1.05 of 1.00: exhausted
            await eventually(
                lambda: cluster.condition("llmbudgets", "acme", "Exhausted"),
                lambda cond: cond.get("status") == "True",
                what="Exhausted",
            )
            assert await spend(wh, "acme", "0.01", "r3") == 429
            reasons = await eventually(
                lambda: cluster.reasons("acme"),
                lambda reasons: "BudgetExhausted" in reasons,
                what="a BudgetExhausted Event",
            )
            await after_syncs(operator)  # a few more syncs: nothing is said twice
            assert cluster.reasons("acme") == reasons
            # 0.75 crossed 70 %; 1.05 crossed 80, 90 and 100 % at once: each said once.
            assert reasons.count("SoftLimitReached") == 3
            assert reasons.count("BudgetExhausted") == 1
            messages = [e["message"] for e in cluster.events("acme")]
            assert any("70% of the limit reached" in m for m in messages), messages
            assert cluster.status("llmbudgets", "acme")["state"] == "Exhausted"


async def test_bad_input_is_reported_and_the_rest_is_unaffected(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    # The API server itself rejects what the schema can check (each CEL message is
    # tested in test_crds); the operator never sees it.
    status, answer = cluster.kube.request(
        "POST",
        f"/apis/budgetguard.io/v1alpha1/namespaces/{cluster.namespace}/llmbudgets",
        {
            "apiVersion": "budgetguard.io/v1alpha1",
            "kind": "LLMBudget",
            "metadata": {"name": "negative"},
            "spec": {"limit": "-5"},
        },
    )
    assert status == 422
    assert "limit must be a positive amount of USD" in answer["message"], answer
    cluster.budget("good", "5", scope={"tenant": "good"})
    cluster.budget("first", "5", scope={"tenant": "twin"})
    cluster.budget("mars", "5", scope={"tenant": "mars"}, timeZone="Mars/Olympus_Mons")
    cluster.create(
        "BurstBudget",
        "orphan",
        {
            "budgetRef": {"name": "nowhere"},
            "amount": "10",
            "validFrom": rfc3339(dt.datetime.now(dt.UTC)),
            "validUntil": rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)),
            "approvedBy": "cfo@example.com",
        },
    )
    cluster.budget(
        "alerted",
        "5",
        scope={"tenant": "alerted"},
        alerts={"secretRef": {"name": "no-such-secret"}},
    )
    # Creation timestamps have one-second resolution: "second" is created in a later one.
    first = cluster.get("llmbudgets", "first")
    assert first is not None
    first_created = dt.datetime.fromisoformat(first["metadata"]["creationTimestamp"])
    await eventually(
        lambda: dt.datetime.now(dt.UTC).replace(microsecond=0),
        lambda now: now > first_created,
        what="a second later than first's creation",
    )
    cluster.budget("second", "5", scope={"tenant": "twin"})
    with running_operator(cluster, redis_server.url, tmp_path / "op"):
        for name in ("good", "first", "alerted"):
            await eventually(lambda name=name: cluster.ready(name), bool, what=f"{name} Ready")
        duplicate = await eventually(
            lambda: cluster.condition("llmbudgets", "second", "Accepted"),
            lambda cond: cond.get("status") == "False",
            what="second rejected",
        )
        assert duplicate["reason"] == "DuplicateScope"
        assert "first" in duplicate["message"], duplicate
        zone = await eventually(
            lambda: cluster.condition("llmbudgets", "mars", "Accepted"),
            lambda cond: cond.get("status") == "False",
            what="mars rejected",
        )
        assert zone["reason"] == "InvalidTimeZone"
        assert "Mars/Olympus_Mons" in zone["message"]
        assert cluster.status("llmbudgets", "mars")["state"] == "Rejected"
        orphan = await eventually(
            lambda: cluster.condition("burstbudgets", "orphan", "Accepted"),
            lambda cond: cond.get("status") == "False",
            what="orphan rejected",
        )
        assert orphan["reason"] == "BudgetNotFound"
        assert "nowhere" in orphan["message"]
        secret = await eventually(
            lambda: cluster.condition("llmbudgets", "alerted", "AlertsReady"),
            lambda cond: cond.get("status") == "False",
            what="AlertsReady False",
        )
        assert secret["reason"] == "SecretNotFound"
        assert "no-such-secret" in secret["message"]

        published = await PublishedConfigStore(redis_client).read()
        assert published is not None
        names = sorted(m["metadata"]["name"] for m in published.budgets)
        assert names == ["alerted", "first", "good"]


async def test_deleting_a_budget_unpublishes_it_and_keeps_its_history(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    cluster.budget("keep", "5", scope={"tenant": "keep"})
    cluster.budget("gone", "5", scope={"tenant": "gone"})
    with running_operator(cluster, redis_server.url, tmp_path / "op"):
        await eventually(lambda: cluster.ready("gone"), bool, what="gone Ready")
        async with start_published_webhook(tmp_path / "wh", redis_server.url) as wh:
            await enforced_by(wh, "gone")
            assert await spend(wh, "gone", "0.50", "g1") == 200
        counters_before = await redis_client.keys("*gone*")
        assert counters_before
        cluster.delete("llmbudgets", "gone")
        await eventually(
            lambda: cluster.get("llmbudgets", "gone"), lambda obj: obj is None, what="deleted"
        )
        published = await PublishedConfigStore(redis_client).read()
        assert published is not None
        assert [m["metadata"]["name"] for m in published.budgets] == ["keep"]
        assert set(await redis_client.keys("*gone*")) >= set(counters_before)


async def test_a_flushed_ledger_is_restored_from_status(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    cluster.budget("acme", "1.00", scope={"tenant": "acme"}, thresholds=THRESHOLDS)
    with running_operator(cluster, redis_server.url, tmp_path / "op") as operator:
        await eventually(lambda: cluster.ready("acme"), bool, what="acme Ready")
        async with start_published_webhook(tmp_path / "wh", redis_server.url) as wh:
            await enforced_by(wh, "acme")
            assert await spend(wh, "acme", "0.85", "r1") == 200
            await eventually(
                lambda: cluster.status("llmbudgets", "acme").get("spent"),
                lambda spent: spent == "0.85",
                what="spent recorded",
            )
            await eventually(
                lambda: cluster.reasons("acme"),
                lambda reasons: reasons.count("SoftLimitReached") == 2,  # 70 and 80
                what="two SoftLimitReached Events",
            )
            await redis_client.flushdb()  # Redis lost everything
            await eventually(
                lambda: cluster.reasons("acme"),
                lambda reasons: "LedgerRestored" in reasons,
                what="a LedgerRestored Event",
            )
            await enforced_by(wh, "acme")  # the config was published again
            view = (await wh.api("/v1/budgets")).json()["budgets"][0]
            assert view["spentUsd"] == "0.85"
            assert await spend(wh, "acme", "0.02", "r2") == 200  # 0.87: no threshold crossed
            await after_syncs(operator)
            reasons = cluster.reasons("acme")
            assert reasons.count("SoftLimitReached") == 2, reasons  # 70 and 80 not said again
            assert reasons.count("LedgerRestored") == 1
            assert cluster.status("llmbudgets", "acme")["spent"] == "0.87"


async def test_events_and_alerts_are_said_once_across_restarts(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    async with alert_receiver() as receiver:
        cluster.secret("alerts", {"url": receiver.url})
        cluster.budget(
            "acme",
            "1.00",
            scope={"tenant": "acme"},
            thresholds=THRESHOLDS,
            alerts={"secretRef": {"name": "alerts"}},
        )
        receiver.fail_next = 1  # the first delivery fails and is retried
        async with start_published_webhook(tmp_path / "wh", redis_server.url) as wh:
            with running_operator(cluster, redis_server.url, tmp_path / "op1"):
                await eventually(lambda: cluster.ready("acme"), bool, what="acme Ready")
                await enforced_by(wh, "acme")
                assert await spend(wh, "acme", "0.72", "r1") == 200
                await eventually(
                    receiver.reasons, lambda got: got == ["SoftLimitReached"], what="one alert"
                )
            alert = receiver.received[0]
            assert alert["budget"] == f"{cluster.namespace}/acme"
            assert alert["threshold"] == 70 and alert["usedUsd"] == "0.72"
            with running_operator(cluster, redis_server.url, tmp_path / "op2") as second:
                await after_syncs(second)  # the new operator syncs a few times
                assert receiver.reasons() == ["SoftLimitReached"]
                assert cluster.reasons("acme").count("SoftLimitReached") == 1
                assert await spend(wh, "acme", "0.10", "r2") == 200  # 0.82: 80 %
                await eventually(
                    receiver.reasons,
                    lambda got: got == ["SoftLimitReached", "SoftLimitReached"],
                    what="the 80 % alert",
                )
                ready_cond = cluster.condition("llmbudgets", "acme", "AlertsReady")
                assert ready_cond["status"] == "True", ready_cond
            assert cluster.reasons("acme").count("SoftLimitReached") == 2


async def test_burst_pool_lifecycle_and_review(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    cluster.budget("launch", "0.10", scope={"tenant": "launch"}, thresholds=[50])
    cluster.launch_week("launch", "0.20", now)
    with running_operator(cluster, redis_server.url, tmp_path / "op"):
        await eventually(lambda: cluster.ready("launch"), bool, what="launch Ready")
        phase = await eventually(
            lambda: cluster.status("burstbudgets", "launch-week").get("phase"),
            lambda phase: phase == "Active",
            what="burst Active",
        )
        assert phase == "Active"
        async with start_published_webhook(tmp_path / "wh", redis_server.url) as wh:
            await enforced_by(wh, "launch")
            assert await spend(wh, "launch", "0.10", "b1") == 200  # the budget is spent
            assert await spend(wh, "launch", "0.15", "b2") == 200  # the pool takes it
            await eventually(
                lambda: cluster.reasons("launch"),
                lambda reasons: "BurstActivated" in reasons,
                what="BurstActivated",
            )
            await eventually(
                lambda: cluster.condition("llmbudgets", "launch", "BurstActive"),
                lambda cond: cond.get("status") == "True",
                what="BurstActive",
            )
            assert await spend(wh, "launch", "0.10", "b3") == 200  # beyond the pool
            await spend(wh, "launch", "0.01", "b4")
            await eventually(
                lambda: cluster.reasons("launch"),
                lambda reasons: "BurstExhausted" in reasons,
                what="BurstExhausted",
            )
            status = await eventually(
                lambda: cluster.status("burstbudgets", "launch-week"),
                lambda status: status.get("phase") == "Exhausted" and "review" in status,
                what="burst Exhausted with a review",
            )
        review = status["review"]
        assert review["approvedBy"] == "cfo@example.com"
        assert review["reason"] == "launch week"
        assert review["requests"] >= 2
        # Every request was settled today (UTC, the budget's zone), or just after midnight.
        days = {now.date().isoformat(), dt.datetime.now(dt.UTC).date().isoformat()}
        assert review["peakDay"] in days, review
        assert Decimal(review["peakDaySpent"]) >= Decimal("0.35"), review  # b1 + b2 + b3
        reasons = cluster.reasons("launch")
        assert reasons.count("BurstActivated") == 1 and reasons.count("BurstExhausted") == 1


async def test_two_replicas_one_active_and_the_other_takes_over(
    cluster: Cluster, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    cluster.budget("acme", "1.00", scope={"tenant": "acme"})
    with (
        running_operator(cluster, redis_server.url, tmp_path / "a", "--priority", "200") as high,
        running_operator(cluster, redis_server.url, tmp_path / "b", "--priority", "100") as low,
    ):
        await eventually(lambda: cluster.ready("acme"), bool, what="acme Ready")
        await eventually(lambda: high.logged("operator loop started"), what="the high one leads")
        await after_syncs(high)  # the other had every chance to start a loop too
        assert high.logged("operator loop started")
        assert not low.logged("operator loop started")
        peering = cluster.kube.kubectl(
            "get", "kopfpeerings", "-n", cluster.namespace, "-o", "jsonpath={.items[*].status}"
        )
        assert peering.stdout.count('"priority"') == 2, peering.stdout
        high.kill()  # a crashed node: no goodbye to the peers
        await eventually(
            lambda: low.logged("operator loop started"),
            bool,
            within=40,
            what="the standby replica takes over",
        )
        cluster.budget("later", "2.00", scope={"tenant": "later"})
        await eventually(lambda: cluster.ready("later"), bool, what="later Ready")


async def test_the_examples_become_ready(
    crds: KubeAPIServer, redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> None:
    files = sorted((ROOT / "examples" / "budgets").glob("*.yaml"))
    documents = [doc for file in files for doc in yaml.safe_load_all(file.read_text())]
    namespaces = sorted({doc["metadata"]["namespace"] for doc in documents})
    for ns in namespaces:
        crds.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})  # 409: fine
    for file in files:
        applied = crds.kubectl("apply", "-f", str(file))
        assert applied.returncode == 0, applied.stderr
    clusters = {ns: Cluster(crds, ns) for ns in namespaces}
    extra = [arg for ns in namespaces for arg in ("--namespace", ns)]
    workdir = tmp_path / "op"
    with running_operator(clusters[namespaces[0]], redis_server.url, workdir, *extra):
        for doc in documents:
            cluster = clusters[doc["metadata"]["namespace"]]
            name = doc["metadata"]["name"]
            if doc["kind"] == "LLMBudget":
                await eventually(lambda c=cluster, n=name: c.ready(n), bool, what=f"{name} Ready")
            else:
                accepted = await eventually(
                    lambda c=cluster, n=name: c.condition("burstbudgets", n, "Accepted"),
                    lambda cond: cond.get("status") == "True",
                    what=f"{name} Accepted",
                )
                assert accepted["reason"] == "Valid"
        published = await PublishedConfigStore(redis_client).read()
        assert published is not None
        assert len(published.budgets) == sum(d["kind"] == "LLMBudget" for d in documents)
