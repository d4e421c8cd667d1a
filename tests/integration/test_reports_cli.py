"""`budget-guard report` (standalone: budget files and a real Redis) and `budget-guard
simulate` on a synthetic history with known answers: the review's figures and actions in
every format, the simulator's verdicts, and the exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.localservices import RedisServer
from budget_guard.store.ledger import Ledger
from tests.commands import cli
from tests.factories import budget, budget_manifest
from tests.spending import USD, identity, spend_daily

pytestmark = pytest.mark.redis

AT = "2030-11-20T00:00:00Z"  # nineteen whole days of November
OCT_1, OCT_23 = dt.date(2030, 10, 1), dt.date(2030, 10, 23)
TEAMS: dict[str, dict[str, Any]] = {
    "team-a": {"tenant": "acme", "limit": "1000"},
    "team-b": {"tenant": "globex", "limit": "300"},
    "team-c": {"tenant": "initech", "limit": "200"},
    "team-d": {"tenant": "hooli", "limit": "1000", "commitment": {"amount": "500",
                                                                  "discountPercent": "10"}},
    "team-e": {"tenant": "newco", "limit": "100"},
}  # fmt: skip


def manifests() -> list[dict[str, Any]]:
    made = []
    for name, spec in TEAMS.items():
        extra = {k: v for k, v in spec.items() if k not in ("tenant", "limit")}
        made.append(
            budget_manifest(
                name, spec["limit"], namespace="finance", tenant=spec["tenant"], **extra
            )
        )
    return made


@pytest.fixture
async def history(redis_client: Redis, tmp_path: Path) -> Path:
    """Oct 1-22 acme spends $10 a day; from Oct 23 on, acme, globex, initech and hooli
    $12 a day; newco only on Nov 18 and 19. Returns the budget directory."""
    snapshot = BudgetSnapshot(
        [budget(n, s["limit"], namespace="finance", tenant=s["tenant"]) for n, s in TEAMS.items()]
    )
    ledger = Ledger(redis_client)
    await spend_daily(ledger, snapshot, identity("acme"), OCT_1, [10 * USD] * 22 + [12 * USD] * 28)
    for tenant in ("globex", "initech", "hooli"):
        await spend_daily(ledger, snapshot, identity(tenant, "bob"), OCT_23, [12 * USD] * 28)
    await spend_daily(ledger, snapshot, identity("newco"), dt.date(2030, 11, 18), [5 * USD] * 2)
    directory = tmp_path / "budgets"
    directory.mkdir()
    (directory / "teams.yaml").write_text(yaml.safe_dump_all(manifests()))
    return directory


async def test_the_review_figures_and_actions(
    history: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    code, text = await cli(
        "report", "--budgets", str(history), "--redis-url", redis_server.url, "--at", AT,
        "--format", "json", output=tmp_path / "review.json",
    )  # fmt: skip
    assert code == 0
    rows = {row["budget"]: row for row in json.loads(text)["budgets"]}
    a = rows["finance/team-a"]
    assert (a["allocatedUsd"], a["spentUsd"], a["yearToDateUsd"]) == ("1000.00", "228.00", "556.00")
    assert (a["utilizationPercent"], a["trend"], a["trendPercent"]) == ("22.8", "up 20 %", 20)
    assert a["previousPeriodUsd"] == "328.00"
    assert a["forecast"]["spendUsd"] == "360.00"  # 228 + 11 days x $12
    assert a["forecast"]["limitDate"] is None and a["action"] == "OK"
    b = rows["finance/team-b"]
    assert (b["trend"], b["forecast"]["spendUsd"]) == ("new", "360.00")
    assert b["forecast"]["limitDate"] == "2030-11-25"  # 228 + 6 x 12 = 300
    assert (b["action"], b["requestUsd"]) == ("request +$60", "60.00")
    assert rows["finance/team-c"]["action"] == "hard limit active"
    d = rows["finance/team-d"]["commitment"]
    assert d == {
        "amountUsd": "500.00",
        "discountPercent": "10",
        "utilizationPercent": "45.6",
        "projectedUnusedUsd": "140.00",
        "discountUsd": "22.80",
    }
    e = rows["finance/team-e"]
    assert e["forecast"]["spendUsd"] is None
    assert e["forecast"]["message"] == (
        "too little history to forecast: 2 complete days with spend, 3 needed"
    )
    assert [day["spentUsd"] for day in a["days"]][-2:] == ["12.00", "0.00"]


async def test_every_output_format(
    history: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    base = ("report", "--budgets", str(history), "--redis-url", redis_server.url, "--at", AT)
    _, text = await cli(*base, output=tmp_path / "review.txt")
    header, *lines = text.splitlines()
    assert header.split() == ["BUDGET", "SCOPE", "PERIOD", "ALLOCATED", "SPENT", "YTD",
                              "UTILIZED", "TREND", "FORECAST", "ACTION", "COMMITMENT"]  # fmt: skip
    team_b = next(line for line in lines if line.startswith("finance/team-b"))
    assert "$300.00" in team_b and "$360.00 (limit 2030-11-25)" in team_b
    assert team_b.split()[-3:] == ["request", "+$60", "-"]
    assert "finance/team-e: too little history to forecast" in text
    _, md = await cli(*base, "--format", "markdown", output=tmp_path / "review.md")
    assert "| finance/team-a | tenant=acme | 2030-11 | $1,000.00 | $228.00 | $556.00 |" in md
    _, table = await cli(*base, "--format", "csv", output=tmp_path / "review.csv")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [r["action"] for r in rows] == [
        "OK", "request +$60", "hard limit active", "OK", "OK"
    ]  # fmt: skip
    assert rows[3]["commitment_projected_unused_usd"] == "140.00"
    _, page = await cli(*base, "--format", "html", output=tmp_path / "review.html")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page.lower()
    assert page.count("<svg") == 5 and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "stroke-dasharray" in page and "<polyline" in page


async def test_the_simulator_says_who_would_be_blocked_and_when(
    history: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    proposal = tmp_path / "proposal"
    proposal.mkdir()
    (proposal / "budgets.yaml").write_text(
        yaml.safe_dump_all(
            [
                budget_manifest("acme", "200", namespace="finance", tenant="acme"),
                budget_manifest("globex", "5000", namespace="finance", tenant="globex"),
                budget_manifest("pro", "1", namespace="finance", tier="pro"),
            ]
        )
    )
    base = ("simulate", "--budgets", str(proposal), "--redis-url", redis_server.url,
            "--from", "2030-10-01", "--to", "2030-11-19")  # fmt: skip
    code, text = await cli(*base, "--format", "json", output=tmp_path / "verdict.json")
    assert code == 0
    verdict = json.loads(text)
    periods = {(p["budget"], p["period"]): p for p in verdict["periods"]}
    october = periods[("finance/acme", "2030-10")]
    assert october["blockedAt"] == "2030-10-21T00:00:00Z"  # $200 spent by the end of Oct 20
    assert october["deniedUsd"] == "128.00"
    november = periods[("finance/acme", "2030-11")]
    assert november["blockedAt"] == "2030-11-17T16:00:00Z"  # $8 of Nov 17's $12 still fit
    assert november["deniedUsd"] == "28.00"
    assert periods[("finance/globex", "2030-11")]["blockedAt"] is None
    assert verdict["tenantsBlocked"] == [
        {"tenant": "acme", "from": "2030-10-21T00:00:00Z", "deniedUsd": "156.00"}
    ]
    assert verdict["deniedUsd"] == "156.00"
    assert verdict["notReplayed"] == {
        "finance/pro": "scope.tier: the history does not record tiers"
    }
    code, text = await cli(*base, "--must-not-block", "globex", output=tmp_path / "ok.txt")
    assert code == 0 and "acme: from 2030-10-21T00:00:00Z, $156.00 denied" in text
    code, text = await cli(*base, "--must-not-block", "acme", output=tmp_path / "no.txt")
    assert code == 3 and "blocked from 2030-11-17T16:00:00Z" in text


def test_simulate_exit_codes_as_a_ci_gate_sees_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The real command line, as a CI job or an Argo CD PreSync hook runs it."""
    proposal = tmp_path / "proposal"
    proposal.mkdir()
    (proposal / "b.yaml").write_text(yaml.safe_dump(budget_manifest("acme", "1", tenant="acme")))
    ledger_url = redis_server.url

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "budget_guard", "simulate", "--budgets", str(proposal),
             "--redis-url", ledger_url, *argv],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    async def seed() -> None:
        client = Redis.from_url(ledger_url)
        try:
            await client.flushdb()
            snapshot = BudgetSnapshot([budget("acme", "1", tenant="acme")])
            await spend_daily(Ledger(client), snapshot, identity("acme"), OCT_1, [2 * USD] * 3)
        finally:
            await client.aclose()

    asyncio.run(seed())
    blocked = run("--from", "2030-10-01", "--to", "2030-10-03", "--must-not-block", "acme")
    assert blocked.returncode == 3, blocked.stderr
    assert blocked.stderr == "budget-guard simulate: tenant acme would have been blocked\n"
    unknown = run("--from", "2030-10-01", "--to", "2030-10-03", "--must-not-block", "umbrella")
    assert unknown.returncode == 5 and "unknown tenant 'umbrella'" in unknown.stderr
    empty = run("--from", "2030-09-01", "--to", "2030-09-30")
    assert empty.returncode == 4 and "no spend recorded from 2030-09-01" in empty.stderr
    malformed = run("--from", "Oct 1", "--to", "2030-10-03")
    assert malformed.returncode == 2 and "--from: 'Oct 1' is not a day" in malformed.stderr
    missing = run("--to", "2030-10-03")
    assert missing.returncode == 2 and "--from is required" in missing.stderr


async def test_a_report_without_budgets_or_ledger_says_so(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _ = await cli("report", "--budgets", str(empty), "--redis-url", redis_server.url,
                        output=tmp_path / "x")  # fmt: skip
    assert code == 4 and "no LLMBudget in" in capsys.readouterr().err
    (empty / "b.yaml").write_text(yaml.safe_dump(budget_manifest("a", "1")))
    code, _ = await cli("report", "--budgets", str(empty), "--redis-url",
                        "redis://127.0.0.1:1/0", output=tmp_path / "x")  # fmt: skip
    assert code == 6 and "cannot be read" in capsys.readouterr().err
    code, _ = await cli("report", "--budgets", str(empty), "--at", "tomorrow",
                        output=tmp_path / "x")  # fmt: skip
    assert code == 2 and "--at: must be an RFC 3339 time" in capsys.readouterr().err
