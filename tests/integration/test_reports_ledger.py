"""Attribution in the real ledger: the settled-requests stream and its retention, the
aggregates that do not grow with users, and `budget-guard export` against a real Redis:
its totals equal the ledger's counters; bad input ends with the documented exit codes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from budget_guard.domain.budget import Budget
from budget_guard.domain.decision import plan_charges
from budget_guard.domain.pricing import Usage
from budget_guard.domain.resolution import BudgetSnapshot
from budget_guard.localservices import RedisServer
from budget_guard.store.history import read_settled
from budget_guard.store.ledger import ExpiredReservations, Ledger, LedgerSettings
from tests.commands import cli
from tests.factories import budget
from tests.spending import USD, identity, spend
from tests.waiting import eventually

pytestmark = pytest.mark.redis

# In the future: Redis expires keys by its own clock, so test periods must not have ended.
NOW = dt.datetime(2030, 11, 20, 12, 0, tzinfo=dt.UTC)


def snapshot(*budgets: Budget) -> BudgetSnapshot:
    return BudgetSnapshot(budgets)


async def test_every_settlement_lands_in_the_settled_stream(redis_client: Redis) -> None:
    settings = LedgerSettings(expired_reservations=ExpiredReservations.KEEP)
    ledger = Ledger(redis_client, settings)
    plan = snapshot(budget("acme", "100", tenant="acme"), budget("each", "10", user="*"))
    now = dt.datetime.now(dt.UTC)
    reported = await spend(
        ledger, plan, identity(), now, 1_500_000, Usage(100, 20, cached_input_tokens=30)
    )
    charges = plan_charges(plan, identity(user="bob"), now)
    await ledger.reserve("late", charges, 700_000, now, identity(user="bob").attribution)
    swept = await ledger.sweep_expired(now + dt.timedelta(hours=1))
    assert [s.request_id for s in swept] == ["late"]
    entries = await read_settled(
        redis_client, ledger.keys, now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5)
    )
    first, second = entries
    assert (first.request_id, first.cost_micros, first.source) == (reported, 1_500_000, "api")
    assert (first.tenant, first.user, first.feature, first.model) == (
        "acme",
        "alice",
        "chat",
        "gpt-4o",
    )
    assert (first.input_tokens, first.output_tokens) == (130, 20)
    assert first.budgets == ("default/acme", "default/each")
    assert abs(first.at - now) < dt.timedelta(milliseconds=2)
    assert (second.request_id, second.cost_micros, second.source) == ("late", 700_000, "sweeper")
    assert second.user == "bob" and second.input_tokens is None
    # Its usage arriving later charges the difference; the stream records what it replaces.
    await ledger.settle("late", 900_000, now)
    entries = await read_settled(
        redis_client, ledger.keys, now - dt.timedelta(minutes=5), now + dt.timedelta(minutes=5)
    )
    assert (entries[-1].cost_micros, entries[-1].replaces_micros) == (900_000, 700_000)


async def test_the_settled_stream_is_bounded_by_length_and_by_age(redis_client: Redis) -> None:
    plan = snapshot(budget("acme", "1000", tenant="acme"))
    short = Ledger(redis_client, LedgerSettings(settled_stream_length=50))
    for _ in range(400):
        await spend(short, plan, identity(), dt.datetime.now(dt.UTC), 1)
    # Trimmed a whole stream node (100 entries) at a time: bounded near its length.
    assert 50 <= await redis_client.xlen(short.keys.settled) <= 150
    young = Ledger(redis_client, LedgerSettings(settled_stream_age=dt.timedelta(milliseconds=1)))
    newest = (await redis_client.xinfo_stream(short.keys.settled))["last-generated-id"]
    newest_ms = int(str(newest.decode() if isinstance(newest, bytes) else newest).split("-")[0])

    async def redis_ms() -> int:  # the age is judged by Redis's clock
        seconds, micros = await redis_client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    await eventually(redis_ms, lambda ms: ms > newest_ms + 1, every=0.001, what="entries aged")
    await spend(young, plan, identity(), dt.datetime.now(dt.UTC), 1)
    assert await redis_client.xlen(short.keys.settled) <= 101  # the old nodes are gone


async def test_long_term_aggregates_do_not_grow_with_users(redis_client: Redis) -> None:
    plan = snapshot(
        budget("all", "100000"),
        budget("acme", "100000", tenant="acme"),
        budget("each", "100", user="*"),
    )
    ledger = Ledger(redis_client)
    keys = ledger.keys
    all_budgets = plan.budgets

    async def fields_after(users: int, day: dt.datetime) -> tuple[int, int]:
        for n in range(users):
            await spend(ledger, plan, identity(user=f"user-{n}"), day, 1000)
        long_term = [keys.attribution("acme", day.date()), keys.attribution_index(day.date())]
        long_term += [keys.history(b, day.date()) for b in all_budgets]
        detail = [keys.user_attribution("acme", day.date())]
        detail += [keys.user_history(b, day.date()) for b in all_budgets]
        return (
            sum([await redis_client.hlen(key) for key in long_term]),
            sum([await redis_client.hlen(key) for key in detail]),
        )

    few = await fields_after(5, NOW)
    many = await fields_after(200, NOW + dt.timedelta(days=1))
    assert few[0] == many[0]  # 13 months: the same size with 200 users as with 5
    assert many[1] == 40 * few[1]  # the per-user window grows with users, and expires
    assert many[0] == 2 + 2 + 3 * 2


async def test_export_totals_equal_the_ledgers_counters(
    redis_client: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    budgets = [
        budget("all", "100000"),
        budget("acme", "100000", tenant="acme"),
        budget("globex", "100000", tenant="globex"),
        budget("search", "100000", feature="search"),
    ]
    plan = snapshot(*budgets)
    ledger = Ledger(redis_client)
    first = dt.datetime(2030, 11, 1, 9, tzinfo=dt.UTC)
    people = [
        identity("acme", "alice", "chat", "gpt-4o"),
        identity("acme", "bob", "search", "gpt-4o-mini"),
        identity("globex", "carol", "search", "gpt-4o"),
        identity(None, None, "chat", "gpt-4o"),
    ]
    for day in range(20):
        for n, who in enumerate(people):
            when = first + dt.timedelta(days=day, hours=n)
            await spend(ledger, plan, who, when, 1_000_003 * (n + 1) + day * 7)
    # A request of October and one of December: outside the month exported.
    await spend(ledger, plan, people[0], first - dt.timedelta(days=1), 5 * USD)
    await spend(ledger, plan, people[0], first + dt.timedelta(days=30), 5 * USD)

    async def counter(name: str) -> int:
        found = next(b for b in budgets if b.ref.name == name)
        key = ledger.keys.counter(found, found.window(first), None)
        return int(await redis_client.hget(key, "spent") or 0)

    url = redis_server.url
    code, text = await cli(
        "export", "--from", "2030-11", "--to", "2030-11", "--group-by", "tenant",
        "--redis-url", url, output=tmp_path / "by-tenant.csv",
    )  # fmt: skip
    assert code == 0
    rows = {row["tenant"]: int(row["cost_micros"]) for row in csv.DictReader(io.StringIO(text))}
    assert rows["acme"] == await counter("acme")
    assert rows["globex"] == await counter("globex")
    assert sum(rows.values()) == await counter("all")
    code, text = await cli(
        "export", "--from", "2030-11-01", "--to", "2030-11-30", "--group-by",
        "feature,model,user,day", "--format", "jsonl", "--redis-url", url,
        output=tmp_path / "by-user.jsonl",
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in text.splitlines()]
    assert sum(r["cost_micros"] for r in records) == await counter("all")
    assert sum(r["cost_micros"] for r in records if r["feature"] == "search") == await counter(
        "search"
    )
    assert {r["user"] for r in records} == {"alice", "bob", "carol", ""}
    assert sum(r["requests"] for r in records) == 80
    assert records[0]["cost_usd"] == f"{records[0]['cost_micros'] / USD:.6f}".rstrip("0")


async def test_export_of_settled_requests_for_audits(
    redis_client: Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    plan = snapshot(budget("acme", "100", tenant="acme"))
    ledger = Ledger(redis_client)
    now = dt.datetime.now(dt.UTC)
    await spend(ledger, plan, identity(), now, 2_500_000, Usage(10, 5))
    await spend(ledger, plan, identity("globex", "gary"), now, 1_000_000)
    today = now.date().isoformat()
    code, text = await cli(
        "export", "--requests", "--from", today, "--to", today, "--tenant", "acme",
        "--redis-url", redis_server.url, output=tmp_path / "requests.csv",
    )  # fmt: skip
    assert code == 0
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert (row["tenant"], row["user"], row["cost_usd"], row["source"]) == (
        "acme",
        "alice",
        "2.50",
        "api",
    )
    assert (row["input_tokens"], row["output_tokens"], row["budgets"]) == (
        "10",
        "5",
        "default/acme",
    )


async def test_export_bad_input_ends_with_the_documented_exit_codes(
    redis_client: Redis,
    redis_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = snapshot(budget("acme", "100", tenant="acme"))
    ledger = Ledger(redis_client)
    await spend(ledger, plan, identity(), NOW, USD)
    url = redis_server.url

    async def fails(*argv: str) -> tuple[int, str]:
        code, _ = await cli("export", *argv, output=tmp_path / "never.csv")
        return code, capsys.readouterr().err

    assert await fails("--from", "2030-11-31", "--to", "2030-12-01", "--redis-url", url) == (
        2,
        "budget-guard export: --from: '2030-11-31' is not a day like 2026-11-01 or a month "
        "like 2026-11\n",
    )
    code, err = await fails("--from", "2030-12-01", "--to", "2030-11-01", "--redis-url", url)
    assert (code, err) == (2, "budget-guard export: --from 2030-12-01 is after --to 2030-11-01: "
                              "the range runs from the earlier day to the later one\n")  # fmt: skip
    code, err = await fails("--from", "2030-10", "--to", "2030-10", "--redis-url", url)
    assert code == 4 and "no spend recorded from 2030-10-01 to 2030-10-31" in err
    code, err = await fails("--from", "2030-11", "--to", "2030-11", "--tenant", "initech",
                            "--redis-url", url)  # fmt: skip
    assert code == 5 and "unknown tenant 'initech'" in err
    await redis_client.delete(ledger.keys.user_attribution("acme", NOW.date()))  # past the window
    code, err = await fails("--from", "2030-11", "--to", "2030-11", "--group-by", "user",
                            "--redis-url", url)  # fmt: skip
    assert code == 4 and "per-user detail is no longer kept for 2030-11-20" in err
    code, err = await fails("--from", "2030-11", "--to", "2030-11", "--group-by", "team",
                            "--redis-url", url)  # fmt: skip
    assert code == 2 and "--group-by: unknown dimension 'team'" in err
    code, err = await fails("--from", "2030-11", "--to", "2030-11",
                            "--redis-url", "redis://127.0.0.1:1/0")  # fmt: skip
    assert code == 6 and "the ledger at redis://127.0.0.1:1/0 cannot be read" in err
    assert not (tmp_path / "never.csv").exists()
