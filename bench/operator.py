"""The operator at scale: 1,000 LLMBudgets (100 of them per-user templates).

- time from the operator's start until every budget is Ready, beside the floor: the
  same number of status patches sent straight to the API server, 8 at a time (what
  the operator cannot avoid writing);
- the published snapshot's size in Redis;
- one status sync (both kinds listed, every budget's usage in one Redis pipeline,
  statuses compared, nothing to write) beside one Redis round trip;
- the operator process's peak memory (VmHWM).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer, KubeBinaries, OperatorProcess, RedisServer
from budget_guard.operator.alerts import AlertSender
from budget_guard.operator.compile import compile_resources
from budget_guard.operator.controller import Controller
from budget_guard.operator.kube import KubeApi
from budget_guard.operator.settings import OperatorSettings
from budget_guard.store.keys import KeySchema

ROOT = Path(__file__).resolve().parent.parent
GROUP = "/apis/budgetguard.io/v1alpha1"
NAMESPACES = 10
BUDGETS = 1000
TEMPLATES = 100


@dataclass(frozen=True)
class OperatorResults:
    budgets: int
    templates: int
    ready_seconds: float
    floor_patch_seconds: float
    snapshot_bytes: int
    sync_ms: list[float]
    redis_roundtrip_ms: list[float]
    peak_rss_mib: float


def manifests() -> list[dict[str, Any]]:
    out = []
    for i in range(BUDGETS):
        namespace = f"bench-{i % NAMESPACES}"
        if i < TEMPLATES:
            scope = {"user": "*", "tier": f"tier-{i}"}
            limit = "5.00"
        else:
            scope = {"tenant": f"tenant-{i}"}
            limit = f"{100 + i}.00"
        out.append(
            {
                "apiVersion": "budgetguard.io/v1alpha1",
                "kind": "LLMBudget",
                "metadata": {"name": f"budget-{i:04d}", "namespace": namespace},
                "spec": {"scope": scope, "limit": limit, "period": "Monthly"},
            }
        )
    return out


def _create_all(kube: KubeAPIServer, items: list[dict[str, Any]]) -> None:
    for n in range(NAMESPACES):
        kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": f"bench-{n}"}})

    def create(item: dict[str, Any]) -> None:
        path = f"{GROUP}/namespaces/{item['metadata']['namespace']}/llmbudgets"
        status, answer = kube.request("POST", path, item)
        if status != 201:
            raise RuntimeError(f"create failed: {answer}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, items))


def _ready_count(kube: KubeAPIServer) -> tuple[int, list[dict[str, Any]]]:
    status, answer = kube.request("GET", f"{GROUP}/llmbudgets")
    items = list(answer["items"]) if status == 200 else []
    ready = 0
    for item in items:
        for cond in (item.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready += 1
    return ready, items


def _floor_patches(kube: KubeAPIServer, items: list[dict[str, Any]]) -> float:
    """The same number of status writes, straight to the API server, 8 at a time."""
    api = KubeApi()

    async def patch_all() -> None:
        gate = asyncio.Semaphore(8)

        async def one(item: dict[str, Any]) -> None:
            meta = item["metadata"]
            async with gate:
                await api.patch_status(
                    "llmbudgets", meta["namespace"], meta["name"], {"benchFloor": "1"}
                )

        await asyncio.gather(*(one(item) for item in items))

    started = time.perf_counter()
    asyncio.run(patch_all())
    api.close()
    return time.perf_counter() - started


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _sync_cost(redis_url: str, rounds: int = 10) -> tuple[list[float], list[float]]:
    """Whole syncs of the loaded cluster, run in this process; and Redis round trips."""
    settings = OperatorSettings(redis_url=redis_url)
    client = Redis.from_url(redis_url)
    kube = KubeApi()
    controller = Controller(settings, client, kube, AlertSender(kube, aiohttp.ClientSession()))
    listed = await controller.resources()
    controller.published = compile_resources(*listed).generations
    syncs, pings = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        controller.compiled = compile_resources(*await controller.resources())
        await controller.sync()
        syncs.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await client.ping()
        pings.append((time.perf_counter() - started) * 1000)
    await controller.close()
    return syncs, pings


def run() -> OperatorResults:
    kube = KubeAPIServer(KubeBinaries.locate())
    with RedisServer() as redis, kube:
        applied = kube.kubectl("apply", "-f", str(ROOT / "crds"))
        if applied.returncode != 0:
            raise RuntimeError(applied.stderr)
        kube.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        items = manifests()
        _create_all(kube, items)
        os.environ["KUBECONFIG"] = str(kube.kubeconfig_path)
        _, listed = _ready_count(kube)
        floor = _floor_patches(kube, listed)
        args = ["--redis-url", redis.url, "--standalone", "--log-level", "INFO"]
        started = time.perf_counter()
        with OperatorProcess(args) as operator:
            while True:
                ready, listed = _ready_count(kube)
                if ready >= BUDGETS:
                    break
                if time.perf_counter() - started > 600:
                    raise RuntimeError(f"only {ready} of {BUDGETS} Ready after 10 minutes")
                time.sleep(0.25)
            ready_seconds = time.perf_counter() - started
            time.sleep(2)  # a few steady-state syncs before reading the peak
            peak = _peak_rss_mib(operator.pid)
        snapshot = asyncio.run(_snapshot_size(redis.url))
        syncs, pings = asyncio.run(_sync_cost(redis.url))
    return OperatorResults(
        budgets=BUDGETS,
        templates=TEMPLATES,
        ready_seconds=ready_seconds,
        floor_patch_seconds=floor,
        snapshot_bytes=snapshot,
        sync_ms=syncs,
        redis_roundtrip_ms=pings,
        peak_rss_mib=peak,
    )


async def _snapshot_size(redis_url: str) -> int:
    client = Redis.from_url(redis_url)
    size = int(await client.strlen(KeySchema().config_document))
    await client.aclose()
    return size


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
