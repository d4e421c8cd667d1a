"""Reports at scale, and what the ledger's history costs in Redis.

1. ``budget-guard report`` and ``budget-guard export`` over 13 months of history for
   1,000 budgets and 10,000 users, each run as its own process: wall time and peak
   memory (the child's ``ru_maxrss``), beside the floor of starting the command at all.
   The history is written straight into Redis in the ledger's own layout (what 13
   months of settlements leave behind), so that the benchmark does not take 13 months
   of settlements to set up.
2. Redis memory per daily active user: a day of real settlements (reserve and settle
   through the ledger) for N and then 2N users, every key measured with ``MEMORY
   USAGE`` and grouped by what it is kept for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from redis.asyncio import Redis

from budget_guard.domain.decision import plan_charges
from budget_guard.domain.manifest import parse_budget
from budget_guard.domain.resolution import BudgetSnapshot, RequestIdentity
from budget_guard.localservices import RedisServer
from budget_guard.store.keys import KeySchema
from budget_guard.store.ledger import Ledger
from budget_guard.store.plans import LABEL

TENANTS = 100
FEATURES = 10  # budgets per tenant: one per feature
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4")
USERS = 10_000
DAYS = 396  # 13 months
USER_DAYS = 35  # the per-user window
HOURLY_DAYS = 9
USD = 1_000_000


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    peak_mib: float
    output_bytes: int

    def row(self) -> str:
        return (
            f"| {self.name} | {self.seconds:.2f} | {self.peak_mib:.0f} | "
            f"{self.output_bytes / 1024:,.0f} |"
        )


@dataclass(frozen=True)
class ReportResults:
    runs: list[Run]
    history_keys: int
    redis_mib: float
    setup_seconds: float


def _manifests() -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "budgetguard.io/v1alpha1",
            "kind": "LLMBudget",
            "metadata": {"name": f"t{t:03d}-f{f}", "namespace": f"team-{t % 10}"},
            "spec": {
                "scope": {"tenant": f"tenant-{t:03d}", "feature": f"feature-{f}"},
                "limit": "3000",
                "period": "Monthly",
            },
        }
        for t in range(TENANTS)
        for f in range(FEATURES)
    ]


def _amount(*parts: int) -> int:
    """A deterministic spend in micro-USD, varied by its parts."""
    return 1_000_000 + (sum((i + 1) * 7919 * p for i, p in enumerate(parts)) % 9_000_000)


async def write_history(client: Redis, manifests: Sequence[dict[str, object]]) -> int:
    """13 months in the ledger's layout: daily history per budget, hourly for the last
    days, attribution per tenant (feature x model) and per user in the window, the
    tenants' daily index, and this period's counters. Returns the keys written."""
    keys = KeySchema()
    budgets = [parse_budget(m) for m in manifests]
    today = dt.datetime.now(dt.UTC).date()
    now = dt.datetime.now(dt.UTC)
    written = 0
    pipe = client.pipeline(transaction=False)

    async def flush(force: bool = False) -> None:
        nonlocal pipe
        if force or len(pipe.command_stack) >= 20_000:
            await pipe.execute()
            pipe = client.pipeline(transaction=False)

    for n, budget in enumerate(budgets):
        month_spent = 0
        window = budget.window(now)
        for back in range(DAYS):
            day = today - dt.timedelta(days=back)
            spent = _amount(n, back) // FEATURES
            pipe.hset(keys.history(budget, day), mapping={"spent": spent, "requests": 40})
            written += 1
            if day >= window.first_local_day:
                month_spent += spent
            if back < HOURLY_DAYS:
                hours = {f"s:{h:02d}": spent // 24 for h in range(24)}
                pipe.hset(keys.hourly(budget, day), mapping=hours)
                written += 1
            await flush()
        counter = keys.counter(budget, window, None)
        pipe.hset(counter, mapping={"used": month_spent, "spent": month_spent, "requests": 1})
        written += 1
    users_per_tenant = USERS // TENANTS
    for back in range(DAYS):
        day = today - dt.timedelta(days=back)
        index: dict[str, int] = {}
        for t in range(TENANTS):
            tenant = f"tenant-{t:03d}"
            cells: dict[str, int] = {}
            for f in range(FEATURES):
                for m, model in enumerate(MODELS):
                    label = LABEL.join((tenant, f"feature-{f}", model, ""))
                    cells[f"s{LABEL}{label}"] = _amount(t, f, m, back) // 30
                    cells[f"n{LABEL}{label}"] = 12
            pipe.hset(keys.attribution(tenant, day), mapping=cells)
            index[f"s:{tenant}"] = sum(v for k, v in cells.items() if k[0] == "s")
            written += 1
            if back < USER_DAYS:
                detail: dict[str, int] = {}
                for u in range(users_per_tenant):
                    feature, model = f"feature-{u % FEATURES}", MODELS[u % len(MODELS)]
                    label = LABEL.join((tenant, feature, model, f"user-{t:03d}-{u:03d}"))
                    detail[f"s{LABEL}{label}"] = _amount(t, u, back) // 100
                    detail[f"n{LABEL}{label}"] = 3
                pipe.hset(keys.user_attribution(tenant, day), mapping=detail)
                written += 1
            await flush()
        pipe.hset(keys.attribution_index(day), mapping=index)
        written += 1
    await flush(force=True)
    return written


def measure(name: str, argv: Sequence[str], output: Path, scratch: Path) -> Run:
    """``budget-guard argv`` as its own process (``bench.peak``): wall time and peak
    resident memory."""
    record = scratch / "peak"
    command = [sys.executable, "-m", "bench.peak", str(record), *argv]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise RuntimeError(f"{name} failed ({finished.returncode}): {finished.stderr}")
    size = output.stat().st_size if output.exists() else 0
    return Run(name, seconds, int(record.read_text()) / 1024, size)


def run_reports() -> ReportResults:
    today = dt.datetime.now(dt.UTC).date()
    first = (today - dt.timedelta(days=DAYS - 1)).isoformat()
    recent = (today - dt.timedelta(days=USER_DAYS - 1)).isoformat()
    with tempfile.TemporaryDirectory() as scratch, RedisServer() as redis:
        work = Path(scratch)
        manifests = _manifests()
        (work / "budgets.yaml").write_text(yaml.safe_dump_all(manifests))

        async def setup() -> tuple[int, float]:
            client = Redis.from_url(redis.url)
            try:
                keys = await write_history(client, manifests)
                info = await client.info("memory")
                return keys, int(info["used_memory"]) / 1024**2
            finally:
                await client.aclose()

        started = time.perf_counter()
        history_keys, redis_mib = asyncio.run(setup())
        setup_seconds = time.perf_counter() - started
        url = ["--redis-url", redis.url]
        runs = [measure("floor: `budget-guard --version`", ["--version"], work / "-", work)]
        for name, extra, out in (
            ("report, HTML with 1,000 charts", ["report", "--budgets", str(work), "--format",
                                               "html"], "review.html"),
            ("report, JSON", ["report", "--budgets", str(work), "--format", "json"], "review.json"),
            ("export, 13 months by tenant, feature, model", ["export", "--from", first, "--to",
             today.isoformat()], "export.csv"),
            ("export, 13 months by tenant and day", ["export", "--from", first, "--to",
             today.isoformat(), "--group-by", "tenant,day"], "by-day.csv"),
            ("export, 35 days by user and day (10,000 users)", ["export", "--from", recent,
             "--to", today.isoformat(), "--group-by", "tenant,user,day"], "by-user.csv"),
        ):  # fmt: skip
            output = work / out
            runs.append(measure(name, [*extra, *url, "--output", str(output)], output, work))
        return ReportResults(runs, history_keys, redis_mib, setup_seconds)


# -- Redis memory per daily active user ----------------------------------------------------


@dataclass(frozen=True)
class MemoryResults:
    """Bytes each kind of key took after a day of N users, then after a second day of
    2N other users: ``fixed`` is what a day costs whatever the users, ``per_user`` what
    each daily active user adds."""

    users: int
    requests_per_user: int
    by_kind: dict[str, tuple[int, int]]  # kind -> bytes after day 1, after day 2
    keys_by_kind: dict[str, tuple[int, int]]  # kind -> keys after day 1, after day 2

    def added(self, kind: str) -> tuple[int, int]:
        first, both = self.by_kind.get(kind, (0, 0))
        return first, both - first

    def per_user(self, kind: str) -> float:
        day_one, day_two = self.added(kind)
        return (day_two - day_one) / self.users

    def keys_per_user(self, kind: str) -> float:
        first, both = self.keys_by_kind.get(kind, (0, 0))
        return (both - 2 * first) / self.users

    def fixed(self, kind: str) -> float:
        day_one, _ = self.added(kind)
        return day_one - self.per_user(kind) * self.users


KINDS = (
    ("per-user detail, kept 35 days", (":hu:", ":ua:")),
    ("per-user counters and index, kept two periods", (":u:", ":users")),
    ("reservation records, kept a day", (":r:",)),
    ("decision plans, kept a day", (":plan:",)),
    ("settled-requests stream, bounded", (":settled",)),
    ("hourly history, kept 9 days", (":hh:",)),
    ("daily aggregates, kept 13 months", (":h:", ":a:", ":at:")),
    ("budget counters and the rest", ("",)),
)


def _kind(key: str) -> str:
    for name, marks in KINDS:
        if any(mark in key for mark in marks):
            return name
    return KINDS[-1][0]


async def _usage_by_kind(client: Redis) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes and keys, by kind."""
    totals: dict[str, int] = defaultdict(int)
    keys: dict[str, int] = defaultdict(int)
    async for raw in client.scan_iter(count=1000):
        key = raw.decode()
        totals[_kind(key)] += int(await client.memory_usage(key) or 0)
        keys[_kind(key)] += 1
    return dict(totals), dict(keys)


async def memory_per_user(url: str, users: int = 2000, requests: int = 3) -> MemoryResults:
    """One day of ``requests`` settlements per user, for ``users`` and twice as many (on
    the next day): budgets global, per tenant, per feature and a per-user template."""
    manifests = [
        {"kind": "LLMBudget", "metadata": {"name": name}, "spec": {"scope": scope,
         "limit": "100000000"}}
        for name, scope in (("global", {}), ("tenant", {"tenant": "acme"}),
                            ("feature", {"feature": "chat"}), ("per-user", {"user": "*"}))
    ]  # fmt: skip
    snapshot = BudgetSnapshot([parse_budget(m) for m in manifests])
    client = Redis.from_url(url)
    await client.flushall()
    ledger = Ledger(client)
    measured: list[tuple[dict[str, int], dict[str, int]]] = []
    start = dt.datetime.now(dt.UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    for day, count in enumerate((users, 2 * users)):
        when = start + dt.timedelta(days=day)
        for user in range(count):
            for n in range(requests):  # in two features, at three hours of the day
                at = when + dt.timedelta(hours=3 * n)
                who = RequestIdentity("acme", f"user-{day}-{user:05d}", None,
                                      ("chat", "search")[n % 2], "gpt-4o")  # fmt: skip
                request_id = uuid.uuid4().hex
                charges = plan_charges(snapshot, who, at)
                await ledger.reserve(request_id, charges, 1000, at, who.attribution)
                await ledger.settle(request_id, 900, at)
        measured.append(await _usage_by_kind(client))
    await client.aclose()
    kinds = {name for name, _ in KINDS}
    return MemoryResults(
        users=users,
        requests_per_user=requests,
        by_kind={k: (measured[0][0].get(k, 0), measured[1][0].get(k, 0)) for k in kinds},
        keys_by_kind={k: (measured[0][1].get(k, 0), measured[1][1].get(k, 0)) for k in kinds},
    )


def run_memory(users: int = 2000) -> MemoryResults:
    with RedisServer() as redis:
        return asyncio.run(memory_per_user(redis.url, users))
