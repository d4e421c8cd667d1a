"""Webhook benchmark: wrk against the running webhook and a real Redis, beside a bare
aiohttp handler that answers 200, measured in the same run.

The body is a 1 KB chat completion request; four budgets apply to it (global,
tenant, feature, a per-user template).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from bench.profiling import profiled
from bench.tokens import agent_conversation, text_of
from budget_guard.localservices import WebhookProcess, seed_offline_tiktoken_cache
from budget_guard.localservices.processes import ManagedProcess

IDENTITY = {
    "x-budget-tenant": "acme",
    "x-budget-user": "alice",
    "x-budget-tier": "pro",
    "x-budget-feature": "chat",
}
_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def chat_body(size: int = 1024) -> bytes:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": ""},
        ],
    }
    filler = size - len(json.dumps(body))
    body["messages"][1]["content"] = text_of(filler, 1)
    return json.dumps(body).encode()


def budgets() -> list[dict[str, object]]:
    def make(name: str, scope: dict[str, str]) -> dict[str, object]:
        return {
            "apiVersion": "budgetguard.io/v1alpha1",
            "kind": "LLMBudget",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"scope": scope, "limit": "100000000", "period": "Monthly"},
        }

    return [
        make("global", {}),
        make("tenant", {"tenant": "acme"}),
        make("feature", {"feature": "chat"}),
        make("pro-users", {"user": "*", "tier": "pro"}),
    ]


def wrk_script(path: Path, body: bytes) -> Path:
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in IDENTITY.items())
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["content-type"] = "application/json"\n'
        f"{headers}\n"
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    return path


ROUNDS = 3
BARE = "bare aiohttp handler (floor)"
HOOK = "webhook, 4 budgets"


@dataclass(frozen=True)
class WrkResult:
    name: str
    connections: int
    requests_per_second: float
    p50_us: float
    p99_us: float
    non_2xx: int

    def row(self) -> str:
        return (
            f"| {self.name} | {self.connections} | {self.p50_us:,.0f} | {self.p99_us:,.0f} "
            f"| {self.requests_per_second:,.0f} | {self.non_2xx} |"
        )


def _duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, script: Path, connections: int, seconds: int) -> tuple[str, float, float]:
    """Run wrk (one thread, ``script``) against ``url``: its output, p50 and p99 (µs)."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    return output, _duration_us(percentiles["50"]), _duration_us(percentiles["99"])


def run_wrk(name: str, url: str, script: Path, connections: int, seconds: int) -> WrkResult:
    output, p50_us, p99_us = wrk(url, script, connections, seconds)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        name, connections, rps, p50_us, p99_us, int(non_2xx.group(1)) if non_2xx else 0
    )


def median_run(runs: list[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds."""
    return WrkResult(
        name=runs[0].name,
        connections=runs[0].connections,
        requests_per_second=statistics.median(r.requests_per_second for r in runs),
        p50_us=statistics.median(r.p50_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
    )


def start_floor(name: str, module: str, log: Path) -> tuple[ManagedProcess, int]:
    """Start a floor server, ``python -m module``, which writes its port to ``log``;
    returns it and its port."""
    process = ManagedProcess(name, [sys.executable, "-m", module], log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.strip().isdigit():
            return process, int(text.strip())
        time.sleep(0.05)
    process.stop()
    raise RuntimeError(f"{name} did not start: {log.read_text()}")


def start_bare(workdir: Path) -> tuple[ManagedProcess, int]:
    return start_floor("bare aiohttp", "bench.bare_server", workdir / "bare.log")


def webhook_inputs(workdir: Path) -> dict[str, str]:
    """The four budgets in ``workdir/budgets`` and an offline tiktoken cache; returns the
    webhook's environment."""
    (workdir / "budgets").mkdir()
    (workdir / "budgets" / "bench.yaml").write_text(yaml.safe_dump_all(budgets()))
    seed_offline_tiktoken_cache(workdir / "tiktoken")
    return {"TIKTOKEN_CACHE_DIR": str(workdir / "tiktoken")}


@dataclass(frozen=True)
class AgentTurns:
    """One server's checks of the agent conversations, turn by turn."""

    cache: str
    turns: int
    p50_ms: float
    p99_ms: float
    floor_p50_ms: float  # the bare handler, the same bodies, alternated turn by turn
    floor_p99_ms: float
    added_by_size: list[tuple[float, float]]  # (body KB, median ms added), per tenth of turns


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def agent_bodies(turns: int = 100) -> list[bytes]:
    """Each turn's request, serialised once, before any clock starts."""
    transcript = agent_conversation(turns)
    return [
        json.dumps(
            {"model": "gpt-4.1", "max_tokens": 500, "messages": transcript[: 1 + 3 * turn]}
        ).encode()
        for turn in range(1, turns + 1)
    ]


async def _post_ms(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000


async def agent_turns(
    check_url: str, bare_url: str, label: str, conversations: int = 3
) -> AgentTurns:
    """The conversations' checks, each turn sent to the bare handler and then to the
    webhook (same bytes, same connection pool), so drifts hit both."""
    bodies = agent_bodies()
    hook: list[list[float]] = [[] for _ in bodies]
    bare: list[list[float]] = [[] for _ in bodies]
    async with aiohttp.ClientSession() as session:
        for conversation in range(conversations):
            user = f"agent-{label.replace(' ', '-')}-{conversation}"
            headers = {**IDENTITY, "x-budget-user": user, "content-type": "application/json"}
            for turn, body in enumerate(bodies):
                path = "/v1/chat/completions"
                bare[turn].append(await _post_ms(session, bare_url + path, body, headers))
                hook[turn].append(await _post_ms(session, check_url + path, body, headers))
    all_hook = [ms for turn in hook for ms in turn]
    all_bare = [ms for turn in bare for ms in turn]
    tenth = len(bodies) // 10
    added = []
    for start in range(0, len(bodies), tenth):
        turns = range(start, start + tenth)
        kb = statistics.mean(len(bodies[t]) for t in turns) / 1024
        added.append(
            (
                kb,
                statistics.median(
                    h - b for t in turns for h, b in zip(hook[t], bare[t], strict=True)
                ),
            )
        )
    return AgentTurns(
        label,
        len(all_hook),
        statistics.median(all_hook),
        _percentile(all_hook, 0.99),
        statistics.median(all_bare),
        _percentile(all_bare, 0.99),
        added,
    )


@dataclass(frozen=True)
class WebhookResults:
    wrk: list[WrkResult]
    agent: list[AgentTurns]
    profiles: dict[str, list[str]] = field(default_factory=dict)  # phase: top rows


def run(redis_url: str, seconds: int = 8, profile: bool = False) -> WebhookResults:
    with tempfile.TemporaryDirectory(prefix="budget-guard-bench-") as scratch:
        workdir = Path(scratch)
        env = webhook_inputs(workdir)
        script = wrk_script(workdir / "chat.lua", chat_body())
        # INFO logs start-up and config only: allowed requests are not logged by default.
        base = [
            "--budgets",
            str(workdir / "budgets"),
            "--redis-url",
            redis_url,
        ]
        bare, bare_port = start_bare(workdir)
        results: list[WrkResult] = []
        try:
            with WebhookProcess(base, env=env, workdir=workdir / "cached") as webhook:
                url = webhook.check_url + "/v1/chat/completions"
                bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
                run_wrk("warm-up", url, script, 4, 2)
                run_wrk("warm-up", bare_url, script, 4, 2)
                for connections in (1, 32):
                    bare_runs, hook_runs = [], []
                    for _ in range(ROUNDS):  # alternated, so drifts hit both servers
                        bare_runs.append(run_wrk(BARE, bare_url, script, connections, seconds))
                        hook_runs.append(run_wrk(HOOK, url, script, connections, seconds))
                    results += [median_run(bare_runs), median_run(hook_runs)]
                bare_root = f"http://127.0.0.1:{bare_port}"
                with_cache = asyncio.run(agent_turns(webhook.check_url, bare_root, "with cache"))
                profiles = _profile(webhook, bare_root, script, seconds) if profile else {}
            uncached = [*base, "--message-cache-entries", "0"]
            with WebhookProcess(uncached, env=env, workdir=workdir / "uncached") as webhook:
                without_cache = asyncio.run(
                    agent_turns(webhook.check_url, bare_root, "without cache")
                )
        finally:
            bare.stop()
    return WebhookResults(results, [without_cache, with_cache], profiles)


def _profile(
    webhook: WebhookProcess, bare_root: str, script: Path, seconds: int
) -> dict[str, list[str]]:
    """py-spy on the webhook, in passes of their own after the measured ones (sampling
    slows what it samples): one connection of wrk, then the agent turns."""
    profiles: dict[str, list[str]] = {}
    url = webhook.check_url + "/v1/chat/completions"
    with profiled(webhook.pid, profiles, "unloaded check (1 connection, 1 KB body)", True):
        run_wrk(HOOK, url, script, 1, seconds)
    with profiled(webhook.pid, profiles, "agent turns (bodies up to 270 KB)", True):
        asyncio.run(agent_turns(webhook.check_url, bare_root, "profiled"))
    return profiles
