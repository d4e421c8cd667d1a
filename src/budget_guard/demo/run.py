"""Start the services, tell the story, print the budget table, stop everything."""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from budget_guard.demo.story import (
    Guard,
    Timeline,
    careful_agent,
    free_user,
    normal_tenant,
    runaway_agent,
    settlement_overshoot,
)
from budget_guard.localservices import (
    RedisServer,
    ServiceStartError,
    WebhookProcess,
    seed_offline_tiktoken_cache,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "budgets"
PLOT_POINTS = {
    "normal-allowed": "a normal tenant is served throughout",
    "soft-limit": "soft warnings at the thresholds",
    "downgrade": "the model downgrade",
    "burst": "the burst pool taking over",
    "denied": "the 429 with its reset time",
    "worst-case": "a WorstCase budget that settlement cannot push past its limit",
}


def _print(line: str = "") -> None:
    print(line, flush=True)


def budget_table(document: dict[str, Any]) -> list[str]:
    rows = [("BUDGET", "SCOPE", "PERIOD", "ALLOCATED", "SPENT", "USED", "STATUS")]
    for budget in document["budgets"]:
        scope = ",".join(f"{k}={v}" for k, v in budget["scope"].items()) or "global"
        if "usersTracked" in budget:
            allocated = f"${budget['effectiveLimitUsd']}/user"
            top = budget["topUsers"][0] if budget["topUsers"] else None
            spent = f"{budget['usersTracked']} users"
            used = f"top {top['user']} ${top['usedUsd']}" if top else "-"
        else:
            allocated = f"${budget['effectiveLimitUsd']}"
            spent = f"${budget['usedUsd']}"
            used = f"{budget['utilization'] * 100:.1f} %"
        rows.append(
            (
                f"{budget['namespace']}/{budget['name']}",
                scope,
                budget["period"],
                allocated,
                spent,
                used,
                budget["status"],
            )
        )
        for pool in budget.get("burstPools", []):
            rows.append(
                (
                    f"  + burst {pool['name']}",
                    f"approved by {pool['approvedBy']}",
                    "",
                    f"${pool['amountUsd']}",
                    f"${pool['usedUsd']}",
                    "",
                    "",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]


async def tell_the_story(webhook: WebhookProcess, usage_token: str) -> set[str]:
    timeline = Timeline(_print)
    rng = random.Random(7)  # noqa: S311 - demo traffic, not security
    async with aiohttp.ClientSession() as session:
        guard = Guard(session, webhook.check_url, webhook.api_url, usage_token)
        _print("Timeline")
        await normal_tenant(guard, timeline, rng, 0)
        await free_user(guard, timeline, rng)
        await runaway_agent(guard, timeline, rng)
        await careful_agent(guard, timeline, rng)
        document = await guard.budgets()
        _print()
        _print("Settled usage against the hard limits")
        for line in settlement_overshoot(document):
            _print(f"  {line}")
        _print()
        _print("Budgets at the end (GET /v1/budgets)")
        for line in budget_table(document):
            _print(line)
    return timeline.seen


def main(budgets: Path = EXAMPLES) -> int:
    _print("LLM Budget Guard demo: the ext_authz webhook on the example budgets, no cluster.")
    with tempfile.TemporaryDirectory(prefix="budget-guard-demo-") as scratch:
        workdir = Path(scratch)
        token = secrets.token_urlsafe(16)
        (workdir / "usage-token").write_text(token)
        seeded = seed_offline_tiktoken_cache(workdir / "tiktoken")
        env = {"TIKTOKEN_CACHE_DIR": str(workdir / "tiktoken")} if seeded else {}
        try:
            with RedisServer(workdir=workdir / "redis") as redis:
                args = [
                    "--budgets",
                    str(budgets),
                    "--redis-url",
                    redis.url,
                    "--usage-token-file",
                    str(workdir / "usage-token"),
                ]
                with WebhookProcess(args, env=env, workdir=workdir) as webhook:
                    _print(f"  redis-server  {redis.url} (temporary, no persistence)")
                    _print(f"  webhook       checks {webhook.check_url}, API {webhook.api_url}")
                    _print(f"  budgets       {budgets}")
                    _print()
                    seen = asyncio.run(tell_the_story(webhook, token))
        except ServiceStartError as error:
            print(f"demo: a service did not start: {error}", file=sys.stderr)
            return 1
    missing = [text for point, text in PLOT_POINTS.items() if point not in seen]
    _print()
    if missing:
        print(f"demo: the story missed: {', '.join(missing)}", file=sys.stderr)
        return 1
    _print("Shown: " + "; ".join(PLOT_POINTS.values()) + ". Everything started is stopped.")
    return 0
