"""Forecasts, anomalies and committed use in the operator's loop, against the real API
server and Redis with a clock the test sets; and the review read back from the cluster by
a real `kubectl` running the `kubectl-llmbudget` plugin."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.localservices import KubeAPIServer
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.controller import Controller
from budget_guard.operator.events import Announcement
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.settings import OperatorSettings
from budget_guard.store.ledger import Ledger
from tests.factories import budget
from tests.fixtures.operator import AlertReceiver, Cluster, alert_receiver
from tests.fixtures.webhook import Clock
from tests.spending import USD, identity, spend, spend_daily
from tests.waiting import eventually

pytestmark = [pytest.mark.kube, pytest.mark.redis]

NOW = dt.datetime(2030, 11, 20, 0, 0, tzinfo=dt.UTC)  # nineteen whole days of November
OCT_23 = dt.date(2030, 10, 23)
BIN = Path(sys.executable).parent


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    async def __call__(self, said: Announcement) -> bool:
        name = said.manifest["metadata"]["name"]
        self.events.append((name, said.kind, said.reason, said.message))
        return True

    def of(self, name: str) -> list[tuple[str, str]]:
        return [(kind, reason) for who, kind, reason, _ in self.events if who == name]


class Loop:
    def __init__(
        self, controller: Controller, cluster: Cluster, clock: Clock, recorder: Recorder,
        receiver: AlertReceiver, ledger: Ledger,
    ) -> None:  # fmt: skip
        self.controller, self.cluster, self.clock = controller, cluster, clock
        self.recorder, self.receiver, self.ledger = recorder, receiver, ledger

    def budget(self, name: str, limit: str, tenant: str, **spec: Any) -> BudgetSnapshot:
        """An LLMBudget with alerts in the cluster; the snapshot to write its history with."""
        alerts = {"secretRef": {"name": "hook"}, "format": "Generic"}
        self.cluster.budget(name, limit, scope={"tenant": tenant}, alerts=alerts, **spec)
        made = budget(name, limit, namespace=self.cluster.namespace, tenant=tenant, **spec)
        return BudgetSnapshot([made])

    async def turns(self, count: int = 2) -> None:
        """A turn (publish, then sync), then syncs: what the loop does as time passes."""
        await self.controller.turn()
        for _ in range(count - 1):
            await self.controller.resync()  # no Kopf here: a list tells what changed
            await self.controller.sync()

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return self.cluster.condition("llmbudgets", name, kind)


@pytest.fixture
async def loop(
    crds: KubeAPIServer, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Loop]:
    monkeypatch.setenv("KUBECONFIG", str(crds.kubeconfig_path))
    cluster = Cluster.fresh(crds, "insight")
    settings = OperatorSettings(
        namespaces=(cluster.namespace,), publish_delay_seconds=0, insight_interval_seconds=0
    )
    kube = KubeApi()
    recorder = Recorder()
    alerts = AlertSender(kube, aiohttp.ClientSession(), first_delay=0.05)
    clock = Clock(NOW)
    async with alert_receiver() as receiver:
        cluster.secret("hook", {"url": receiver.url})
        controller = Controller(settings, redis_client, kube, alerts, clock, recorder)
        try:
            yield Loop(controller, cluster, clock, recorder, receiver, Ledger(redis_client))
        finally:
            await alerts.close()
            kube.close()


async def received(receiver: AlertReceiver, reason: str) -> list[dict[str, Any]]:
    return await eventually(
        lambda: [alert for alert in receiver.received if alert.get("reason") == reason],
        what=f"a {reason} alert received",
    )


async def test_a_forecast_past_the_limit_warns_early_once(loop: Loop) -> None:
    plan = loop.budget("rising", "300", "acme")
    await spend_daily(loop.ledger, plan, identity("acme"), OCT_23, [12 * USD] * 28)
    await loop.turns()
    status = loop.cluster.status("llmbudgets", "rising")
    assert status["forecast"] == {
        "summary": "$360.00, limit on 2030-11-25",
        "spend": "360.00",
        "limitDate": "2030-11-25",
        "basis": "28 days",
    }
    assert status["utilizationPercent"] == "76.0%"  # early: nowhere near 100 %
    condition = loop.condition("rising", "ForecastExceedsLimit")
    assert (condition["status"], condition["reason"]) == ("True", "ProjectedOverLimit")
    assert condition["message"].startswith("projected to reach the $300.00 limit on 2030-11-25")
    assert status["review"]["action"] == "request +$60"
    assert status["review"]["yearToDate"] == "336.00"
    await loop.turns()
    assert loop.recorder.of("rising").count(("Warning", "ForecastExceedsLimit")) == 1
    (alert,) = await received(loop.receiver, "ForecastExceedsLimit")
    assert alert["budget"] == f"{loop.cluster.namespace}/rising"
    assert alert["limitDate"] == "2030-11-25"
    table = loop.cluster.kube.kubectl("get", "llmbudgets", "-n", loop.cluster.namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert "FORECAST" in header.split()
    assert "$360.00, limit on 2030-11-25" in row


async def test_a_forecast_within_the_limit_or_without_history_does_not_warn(loop: Loop) -> None:
    calm = loop.budget("calm", "1000", "calm")
    await spend_daily(loop.ledger, calm, identity("calm"), OCT_23, [12 * USD] * 28)
    loop.budget("young", "10", "young")  # two days of history, spending fast
    young = BudgetSnapshot([budget("young", "10", namespace=loop.cluster.namespace,
                                   tenant="young")])  # fmt: skip
    await spend_daily(loop.ledger, young, identity("young"), dt.date(2030, 11, 18), [4 * USD] * 2)
    await loop.turns()
    assert loop.condition("calm", "ForecastExceedsLimit")["reason"] == "ProjectedWithinLimit"
    assert loop.condition("young", "ForecastExceedsLimit")["reason"] == "InsufficientHistory"
    assert loop.cluster.status("llmbudgets", "young")["forecast"]["summary"] == "n/a"
    assert ("Warning", "ForecastExceedsLimit") not in loop.recorder.of("calm")
    assert ("Warning", "ForecastExceedsLimit") not in loop.recorder.of("young")


async def hourly(loop: Loop, plan: BudgetSnapshot, tenant: str, noise: float, seed: int) -> None:
    """Eight days of $1 an hour (give or take ``noise``) up to NOW."""
    rng = random.Random(seed)
    hour = NOW - dt.timedelta(days=8)
    while hour < NOW:
        amount = int(USD * (1 + rng.uniform(-noise, noise)))
        await spend(loop.ledger, plan, identity(tenant), hour + dt.timedelta(minutes=5), amount)
        hour += dt.timedelta(hours=1)


async def test_a_tenfold_jump_is_an_anomaly_and_noise_is_not(loop: Loop) -> None:
    spiky = loop.budget("spiky", "100000", "spiky", anomaly={"factor": 10})
    noisy = loop.budget("noisy", "100000", "noisy")
    await hourly(loop, spiky, "spiky", 0.0, 1)
    await hourly(loop, noisy, "noisy", 0.8, 2)
    loop.clock.now = NOW + dt.timedelta(minutes=30)
    await spend(loop.ledger, noisy, identity("noisy"), loop.clock.now, int(1.7 * USD))
    await loop.turns()
    assert loop.condition("spiky", "AnomalyDetected")["reason"] == "UsualSpend"
    assert loop.condition("noisy", "AnomalyDetected")["reason"] == "UsualSpend"
    await spend(loop.ledger, spiky, identity("spiky"), loop.clock.now, 10 * USD)
    await loop.turns()
    found = loop.condition("spiky", "AnomalyDetected")
    assert (found["status"], found["reason"]) == ("True", "SpendJump")
    assert "spent in the last hour" in found["message"]
    assert loop.condition("noisy", "AnomalyDetected")["status"] == "False"
    assert loop.cluster.status("llmbudgets", "spiky")["review"]["action"] == "monitor"
    await loop.turns()
    assert loop.recorder.of("spiky").count(("Warning", "AnomalyDetected")) == 1
    assert ("Warning", "AnomalyDetected") not in loop.recorder.of("noisy")
    assert await received(loop.receiver, "AnomalyDetected")


async def test_a_new_budgets_first_days_are_not_an_anomaly(loop: Loop) -> None:
    fresh = loop.budget("fresh", "100000", "fresh")
    await spend(loop.ledger, fresh, identity("fresh"), NOW - dt.timedelta(days=1), USD)
    await spend(loop.ledger, fresh, identity("fresh"), NOW - dt.timedelta(minutes=1), 500 * USD)
    await loop.turns()
    found = loop.condition("fresh", "AnomalyDetected")
    assert (found["status"], found["reason"]) == ("False", "InsufficientBaseline")


async def test_a_commitment_that_will_go_unused_warns_once(loop: Loop) -> None:
    plan = loop.budget("committed", "1000", "hooli", commitment={"amount": "500",
                                                               "discountPercent": "10"})  # fmt: skip
    await spend_daily(loop.ledger, plan, identity("hooli"), OCT_23, [12 * USD] * 28)
    await loop.turns(3)
    assert loop.cluster.status("llmbudgets", "committed")["commitment"] == {
        "amount": "500.00",
        "used": "228.00",
        "utilization": "45.6 %",
        "discount": "22.80",
        "summary": "45.6 % of $500.00; $140.00 projected unused",
        "projectedUnused": "140.00",
    }
    assert loop.recorder.of("committed").count(("Warning", "CommitmentUnused")) == 1
    (alert,) = await received(loop.receiver, "CommitmentUnused")
    assert alert["projectedUnusedUsd"] == "140.00"


def kubectl_env(kube: KubeAPIServer) -> dict[str, str]:
    """kubectl finds plugins on PATH: the virtual environment's bin holds the plugin."""
    kubectl_dir = str(kube.binaries.kubectl.parent)
    return {**os.environ, "PATH": f"{BIN}:{kubectl_dir}", "KUBECONFIG": str(kube.kubeconfig_path)}


async def test_kubectl_runs_the_llmbudget_plugin_on_the_clusters_statuses(loop: Loop) -> None:
    assert shutil.which("kubectl-llmbudget", path=str(BIN)), "pip install -e . installs it"
    plan = loop.budget("team-b", "300", "globex")
    await spend_daily(loop.ledger, plan, identity("globex"), OCT_23, [12 * USD] * 28)
    loop.budget("pending", "5", "nobody")
    await loop.turns()
    kube = loop.cluster.kube
    env = kubectl_env(kube)
    kubectl = str(kube.binaries.kubectl)
    listed = await asyncio.to_thread(
        subprocess.run,
        [kubectl, "plugin", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert f"{BIN}/kubectl-llmbudget" in listed.stdout, listed.stdout + listed.stderr
    namespace = loop.cluster.namespace

    def plugin(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "llmbudget", *argv], env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    answer = await asyncio.to_thread(plugin, "report", "-n", namespace, "--format", "json")
    assert answer.returncode == 0, answer.stderr
    document = json.loads(answer.stdout)
    (row,) = [r for r in document["budgets"] if r["budget"] == f"{namespace}/team-b"]
    assert (row["allocatedUsd"], row["spentUsd"], row["yearToDateUsd"]) == (
        "300.00",
        "228.00",
        "336.00",
    )
    assert (row["forecast"]["spendUsd"], row["forecast"]["limitDate"]) == ("360.00", "2030-11-25")
    assert row["action"] == "request +$60" and row["trend"] == "new"
    assert len(row["days"]) == 20
    text = await asyncio.to_thread(plugin, "report", "-n", namespace)
    assert text.returncode == 0 and "request +$60" in text.stdout
    empty = await asyncio.to_thread(plugin, "report", "-n", "no-such-namespace")
    assert empty.returncode == 4, empty.stderr
    assert "no LLMBudgets found in namespace no-such-namespace" in empty.stderr
