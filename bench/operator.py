"""The operator at scale: 1,000 LLMBudgets (100 per-user templates), and 10,000 (1,000).

- time from the operator's start until every budget is Ready, beside the floor: the
  same number of status patches sent straight to the API server, 8 at a time (what
  the operator cannot avoid writing);
- the published snapshot's size in Redis;
- the process CPU time of a status sync when nothing changed (the operator's own
  ``budget_guard_sync_cpu_seconds``, one value per sync, read off its /metrics), its
  wall time, and how many status writes those syncs sent (resourceVersions compared);
- the operator process's peak memory (VmHWM);
- with ``profile``: the top of a py-spy profile of the start-up and of those syncs.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.profiling import profiled
from budget_guard.localservices import KubeAPIServer, KubeBinaries, OperatorProcess, RedisServer
from budget_guard.operator.insights import INSIGHT_BATCH
from budget_guard.operator.kube import KubeApi
from budget_guard.store.keys import KeySchema

ROOT = Path(__file__).resolve().parent.parent
GROUP = "/apis/budgetguard.io/v1alpha1"
SYNC_INTERVAL_SECONDS = 2
QUIET_SYNCS = 12  # no-change syncs measured after every budget is Ready


@dataclass(frozen=True)
class Scale:
    budgets: int
    templates: int  # of them, per-user templates
    namespaces: int = 10


SMALL = Scale(1_000, 100)
LARGE = Scale(10_000, 1_000)


@dataclass
class QuietSyncs:
    cpu_ms: list[float] = field(default_factory=list)  # the status sync itself
    wall_ms: list[float] = field(default_factory=list)
    insight_ms: list[float] = field(default_factory=list)  # insight batches they carried
    process_cpu_percent: float = 0.0


@dataclass(frozen=True)
class OperatorResults:
    scale: Scale
    create_seconds: float
    ready_seconds: float
    ready_cpu_seconds: float  # the operator's CPU time until then
    insights_seconds: float  # start until every budget has had its first insight
    apiserver_cpu_seconds: float  # the API server's (and etcd's) meanwhile
    floor_patch_seconds: float
    snapshot_bytes: int
    quiet: QuietSyncs  # no-change syncs after every budget is Ready
    writes_in_quiet_syncs: int  # status writes those syncs sent (should be 0)
    peak_rss_mib: float
    scrape_seconds: float  # one whole /metrics (every budget's series)
    profiles: dict[str, list[str]] = field(default_factory=dict)  # phase: top lines


def manifests(scale: Scale) -> list[dict[str, Any]]:
    out = []
    for i in range(scale.budgets):
        namespace = f"bench-{i % scale.namespaces}"
        if i < scale.templates:
            scope = {"user": "*", "tier": f"tier-{i}"}
            limit = "5.00"
        else:
            scope = {"tenant": f"tenant-{i}"}
            limit = f"{100 + i}.00"
        out.append(
            {
                "apiVersion": "budgetguard.io/v1alpha1",
                "kind": "LLMBudget",
                "metadata": {"name": f"budget-{i:05d}", "namespace": namespace},
                "spec": {"scope": scope, "limit": limit, "period": "Monthly"},
            }
        )
    return out


def _session(kube: KubeAPIServer, connections: int) -> aiohttp.ClientSession:
    """Kept-alive TLS connections to the API server as its admin."""
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    return aiohttp.ClientSession(
        base_url=kube.server_url,
        headers={"Authorization": f"Bearer {kube.admin_token}"},
        connector=aiohttp.TCPConnector(ssl=context, limit=connections),
    )


async def _create_all(kube: KubeAPIServer, scale: Scale, items: list[dict[str, Any]]) -> None:
    """Every budget, 32 requests in flight on kept-alive connections."""
    async with _session(kube, 32) as session:
        for n in range(scale.namespaces):
            body = {"metadata": {"name": f"bench-{n}"}}
            async with session.post("/api/v1/namespaces", json=body) as answer:
                answer.raise_for_status()
        gate = asyncio.Semaphore(32)

        async def create(item: dict[str, Any]) -> None:
            path = f"{GROUP}/namespaces/{item['metadata']['namespace']}/llmbudgets"
            async with gate, session.post(path, json=item) as answer:
                if answer.status != 201:
                    raise RuntimeError(f"create failed: {await answer.text()}")

        await asyncio.gather(*(create(item) for item in items))


def _get(kube: KubeAPIServer, path: str) -> Any:
    """A GET as the admin, with room for a loaded machine (a list of 10,000 budgets)."""
    request = urllib.request.Request(kube.server_url + path)  # noqa: S310 - our own server
    request.add_header("Authorization", f"Bearer {kube.admin_token}")
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    with urllib.request.urlopen(request, timeout=300, context=context) as answer:  # noqa: S310
        return json.loads(answer.read())


def _listed(kube: KubeAPIServer) -> list[dict[str, Any]]:
    return list(_get(kube, f"{GROUP}/llmbudgets?resourceVersion=0")["items"])


def _ready_count(items: list[dict[str, Any]]) -> int:
    return sum(
        1
        for item in items
        for cond in (item.get("status") or {}).get("conditions") or []
        if cond.get("type") == "Ready" and cond.get("status") == "True"
    )


def _versions(kube: KubeAPIServer) -> dict[str, str]:
    answer = _get(kube, f"{GROUP}/llmbudgets")  # from etcd: the latest
    return {
        f"{i['metadata']['namespace']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in answer["items"]
    }


def _floor_patches(items: list[dict[str, Any]]) -> float:
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


def _proc_status(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


_SCRAPED = (
    "budget_guard_sync_cpu_seconds",
    "budget_guard_sync_duration_seconds",
    "budget_guard_insight_refresh_cpu_seconds",
)


def _full_scrape_seconds(port: int) -> float:
    """One whole /metrics, as Prometheus takes it: every budget's series included."""
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300) as answer:
        answer.read()
    return time.perf_counter() - started


def _scrape(port: int) -> tuple[float, float, float, float, float]:
    """(syncs run, CPU seconds in syncs, wall seconds in syncs, CPU seconds of insight
    batches within them, insight batches) from /metrics."""
    names = "&".join(
        f"name[]={name}{part}" for name in _SCRAPED for part in ("_sum", "_count")
    )  # not the 10,000 budgets' series
    url = f"http://127.0.0.1:{port}/metrics?{names}"
    with urllib.request.urlopen(url, timeout=120) as answer:
        text = answer.read().decode()
    return (
        _metric(text, "budget_guard_sync_cpu_seconds_count"),
        _metric(text, "budget_guard_sync_cpu_seconds_sum"),
        _metric(text, "budget_guard_sync_duration_seconds_sum"),
        _metric(text, "budget_guard_insight_refresh_cpu_seconds_sum"),
        _metric(text, "budget_guard_insight_refresh_cpu_seconds_count"),
    )


def _insights_done(operator: OperatorProcess, scale: Scale) -> float:
    """Wait until every budget has had its first insight (forecasts and reviews come in
    batches of 200, paced): the seconds it took."""
    assert operator.metrics_port
    started = time.perf_counter()
    batches = -(-scale.budgets // INSIGHT_BATCH)
    while _scrape(operator.metrics_port)[4] < batches:
        if time.perf_counter() - started > 1800:
            raise RuntimeError("insights not done after 30 minutes")
        time.sleep(2.0)
    return time.perf_counter() - started


def _quiet_syncs(operator: OperatorProcess, count: int) -> QuietSyncs:
    """CPU and wall ms of each of the next ``count`` syncs (an insight batch's CPU apart),
    and the process's CPU share over them."""
    assert operator.metrics_port
    port = operator.metrics_port
    out = QuietSyncs()
    last = _scrape(port)
    cpu_start, wall_start = _cpu_seconds(operator.pid), time.perf_counter()
    deadline = time.monotonic() + count * SYNC_INTERVAL_SECONDS * 10
    while len(out.cpu_ms) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        now = _scrape(port)
        if now[0] == last[0] + 1:  # exactly one sync since the last look: its own figures
            insight = now[3] - last[3]
            out.cpu_ms.append((now[1] - last[1] - insight) * 1000)
            out.wall_ms.append((now[2] - last[2]) * 1000)
            if insight > 0:
                out.insight_ms.append(insight * 1000)
        last = now
    share = (_cpu_seconds(operator.pid) - cpu_start) / (time.perf_counter() - wall_start)
    out.process_cpu_percent = share * 100
    return out


def run(scale: Scale = SMALL, profile: bool = False) -> OperatorResults:
    kube = KubeAPIServer(KubeBinaries.locate())
    profiles: dict[str, list[str]] = {}
    with RedisServer() as redis, kube:
        applied = kube.kubectl("apply", "-f", str(ROOT / "crds"))
        if applied.returncode != 0:
            raise RuntimeError(applied.stderr)
        kube.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        items = manifests(scale)
        started = time.perf_counter()
        asyncio.run(_create_all(kube, scale, items))
        create_seconds = time.perf_counter() - started
        os.environ["KUBECONFIG"] = str(kube.kubeconfig_path)
        floor = _floor_patches(_listed(kube))
        args = [
            *("--redis-url", redis.url, "--standalone", "--log-level", "INFO"),
            *("--sync-interval-seconds", str(SYNC_INTERVAL_SECONDS)),
            *("--metrics-address", "127.0.0.1:0"),
        ]
        apiserver_cpu_before = sum(_cpu_seconds(pid) for pid in kube.pids())
        started = time.perf_counter()
        with OperatorProcess(args, start_timeout_seconds=120) as operator:
            with profiled(operator.pid, profiles, "start-up", profile):
                while (ready := _ready_count(_listed(kube))) < scale.budgets:
                    if time.perf_counter() - started > 900:
                        raise RuntimeError(f"only {ready} of {scale.budgets} Ready after 15 min")
                    time.sleep(3.0)  # a list of every budget is work for this machine too
                ready_seconds = time.perf_counter() - started
                ready_cpu = _cpu_seconds(operator.pid)
                apiserver_cpu = sum(_cpu_seconds(pid) for pid in kube.pids()) - apiserver_cpu_before
            insights_seconds = _insights_done(operator, scale) + ready_seconds
            _quiet_syncs(operator, 2)  # the statuses written at start have settled
            before = _versions(kube)
            with profiled(operator.pid, profiles, "no-change syncs", profile):
                quiet = _quiet_syncs(operator, QUIET_SYNCS)
            after = _versions(kube)
            assert operator.metrics_port
            scrape_seconds = _full_scrape_seconds(operator.metrics_port)
            peak = _proc_status(operator.pid, "VmHWM")
        snapshot = asyncio.run(_snapshot_size(redis.url))
    return OperatorResults(
        scale=scale,
        create_seconds=create_seconds,
        ready_seconds=ready_seconds,
        ready_cpu_seconds=ready_cpu,
        insights_seconds=insights_seconds,
        apiserver_cpu_seconds=apiserver_cpu,
        floor_patch_seconds=floor,
        snapshot_bytes=snapshot,
        quiet=quiet,
        writes_in_quiet_syncs=sum(1 for key, rv in after.items() if before.get(key) != rv),
        peak_rss_mib=peak,
        scrape_seconds=scrape_seconds,
        profiles=profiles,
    )


async def _snapshot_size(redis_url: str) -> int:
    client = Redis.from_url(redis_url)
    size = int(await client.strlen(KeySchema().config_document))
    await client.aclose()
    return size


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
