"""The ledger path under load: every check a Redis round trip (``--local-leases false``).

wrk drives the check listener at 32, 128 and 512 connections; beside it, in the same
run, the bare aiohttp handler (the HTTP floor) and ``redis-benchmark`` sending the
very reserve.lua call the webhook sends, pipelined (the Redis floor). With
``BENCH_BASELINE=<dir>`` (a checkout of an earlier commit) that commit's webhook is
measured too, alternated with the current one.

A wrk script counts answers by kind, since a fast wrong answer is not throughput:
clean 200s, 200s marked degraded (a fail-open decision), 429s by code, 503s.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis as redis_sync

from bench.ledger import IDENTITY, four_budgets
from bench.webhook import IDENTITY as HEADERS
from bench.webhook import chat_body, start_bare, webhook_inputs, wrk
from budget_guard.domain.decision import ChargePlanner
from budget_guard.domain.resolution import Attribution
from budget_guard.localservices import WebhookProcess
from budget_guard.store.ledger import Ledger
from budget_guard.store.scripts import RESERVE, bulk

CONNECTIONS = (1, 32, 128, 512)
ROUNDS = 3
BARE = "bare aiohttp handler (floor)"
AFTER = "webhook, ledger path"
BEFORE = "webhook, ledger path, before"

_COUNTING = """
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
%(headers)s
wrk.body = %(body)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) clean, degraded, denied, overloaded, unavailable, other = 0, 0, 0, 0, 0, 0 end
function response(status, headers, body)
  if status == 200 then
    if headers["x-budget-degraded"] then degraded = degraded + 1 else clean = clean + 1 end
  elseif status == 429 and body and string.find(body, "overloaded", 1, true) then
    overloaded = overloaded + 1
  elseif status == 429 then denied = denied + 1
  elseif status == 503 then unavailable = unavailable + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local totals = {clean = 0, degraded = 0, denied = 0, overloaded = 0, unavailable = 0, other = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
  end
  io.write(string.format("COUNTS %%d %%d %%d %%d %%d %%d\\n", totals.clean, totals.degraded,
    totals.denied, totals.overloaded, totals.unavailable, totals.other))
end
"""


@dataclass(frozen=True)
class PathRun:
    name: str
    connections: int
    clean_per_second: float  # decided exactly and allowed
    p50_us: float
    p99_us: float
    degraded: int
    overloaded: int
    errors: int  # 503s and anything else

    def row(self) -> str:
        return (
            f"| {self.name} | {self.connections} | {self.clean_per_second:,.0f} "
            f"| {self.p50_us:,.0f} | {self.p99_us:,.0f} | {self.degraded} | {self.overloaded} "
            f"| {self.errors} |"
        )


@dataclass(frozen=True)
class RedisFloor:
    reserve_per_second: float
    ping_per_second: float
    pipeline: int
    ping_p50_us: float  # one PING at a time, redis-py, client side: exact mode's own floor


@dataclass(frozen=True)
class PathResults:
    runs: list[PathRun]
    redis: RedisFloor
    baseline: str | None


def _wrk(name: str, url: str, script: Path, connections: int, seconds: int) -> PathRun:
    output, p50_us, p99_us = wrk(url, script, connections, seconds)
    counts = re.search(r"^COUNTS (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", output, re.MULTILINE)
    assert counts is not None, output
    clean, degraded, denied, overloaded, unavailable, other = map(int, counts.groups())
    return PathRun(
        name,
        connections,
        clean / seconds,
        p50_us,
        p99_us,
        degraded,
        overloaded,
        denied + unavailable + other,
    )


def _median(runs: list[PathRun]) -> PathRun:
    first = runs[0]
    return PathRun(
        first.name,
        first.connections,
        statistics.median(r.clean_per_second for r in runs),
        statistics.median(r.p50_us for r in runs),
        statistics.median(r.p99_us for r in runs),
        sum(r.degraded for r in runs),
        sum(r.overloaded for r in runs),
        sum(r.errors for r in runs),
    )


def _reserve_call_args(redis_url: str) -> list[str]:
    """The webhook's own reserve.lua call for one request, as redis-benchmark arguments,
    its request id replaced by redis-benchmark's random placeholder."""
    client = redis_sync.Redis.from_url(redis_url)
    client.script_load(RESERVE.source)
    planner = ChargePlanner(four_budgets())
    now = dt.datetime.now(dt.UTC)
    charges = planner.plan(IDENTITY, now)
    ledger = Ledger(client)  # type: ignore[arg-type]  # only used to encode, never awaited
    attribution = Attribution("acme", "alice", "chat", "gpt-4o")
    plan = ledger.plan_for(charges, now, attribution)
    request_id = uuid.uuid4().hex
    no_leases = bulk("") + bulk(1234) + bulk("")  # as with --local-leases false
    # The exact bytes the webhook sends (a private method: the bench reads what the
    # ledger would write, without a round trip).
    command = ledger._reserve_command(
        request_id, 1234, int(now.timestamp() * 1000), plan, False, no_leases, request_id
    )
    client.eval(  # store the plan under its key, as the first real reservation would
        "return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])",
        1,
        plan.key,
        plan.content,
        3_600_000,
    )
    client.close()
    parts = _resp_array(command)
    key_prefix = ledger.keys.reservation("")
    return [part.replace(key_prefix + request_id, key_prefix + "__rand_int__") for part in parts]


def _resp_array(command: bytes) -> list[str]:
    """Decode a RESP array of bulk strings."""
    count_line, rest = command.split(b"\r\n", 1)
    parts = []
    for _ in range(int(count_line[1:])):
        length_line, rest = rest.split(b"\r\n", 1)
        length = int(length_line[1:])
        parts.append(rest[:length].decode())
        rest = rest[length + 2 :]
    return parts


def _redis_benchmark(port: int, args: list[str], pipeline: int) -> float:
    output = subprocess.run(
        [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-n",
            "200000",
            "-c",
            "4",
            "-P",
            str(pipeline),
            "-r",
            "100000000",
            "-q",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    match = re.search(r"([\d.]+) requests per second", output)
    assert match is not None, output
    return float(match.group(1))


def redis_floor(redis_url: str, port: int, pipeline: int = 32) -> RedisFloor:
    args = _reserve_call_args(redis_url)
    return RedisFloor(
        reserve_per_second=_redis_benchmark(port, args, pipeline),
        ping_per_second=_redis_benchmark(port, ["PING"], pipeline),
        pipeline=pipeline,
        ping_p50_us=_ping_p50_us(redis_url),
    )


def _ping_p50_us(redis_url: str, count: int = 3000) -> float:
    client = redis_sync.Redis.from_url(redis_url)
    durations = []
    for _ in range(count):
        started = time.perf_counter_ns()
        client.ping()
        durations.append(time.perf_counter_ns() - started)
    client.close()
    return statistics.median(durations) / 1000


def run(redis_url: str, port: int, seconds: int = 5, baseline: Path | None = None) -> PathResults:
    with tempfile.TemporaryDirectory(prefix="budget-guard-bench-path-") as scratch:
        workdir = Path(scratch)
        env = webhook_inputs(workdir)
        script = workdir / "count.lua"
        headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in HEADERS.items())
        script.write_text(
            _COUNTING % {"headers": headers, "body": json.dumps(chat_body().decode())}
        )
        args = [
            "--budgets",
            str(workdir / "budgets"),
            "--redis-url",
            redis_url,
            "--local-leases",
            "false",
        ]
        servers: list[tuple[str, str]] = []
        started: list[WebhookProcess] = []
        bare, bare_port = start_bare(workdir)
        try:
            servers.append((BARE, f"http://127.0.0.1:{bare_port}/v1/chat/completions"))
            after = WebhookProcess(args, env=env, workdir=workdir / "after").start()
            started.append(after)
            servers.append((AFTER, after.check_url + "/v1/chat/completions"))
            if baseline is not None:
                before_env = {**env, "PYTHONPATH": str(baseline / "src")}
                before = WebhookProcess(args, env=before_env, workdir=workdir / "before").start()
                started.append(before)
                servers.append((BEFORE, before.check_url + "/v1/chat/completions"))
            for _, url in servers:
                _wrk("warm-up", url, script, 8, 2)
            runs: list[PathRun] = []
            for connections in CONNECTIONS:
                measured: dict[str, list[PathRun]] = {name: [] for name, _ in servers}
                for _ in range(ROUNDS):  # alternated, so drifts hit every server
                    for name, url in servers:
                        measured[name].append(_wrk(name, url, script, connections, seconds))
                runs += [_median(measured[name]) for name, _ in servers]
        finally:
            for process in started:
                process.stop()
            bare.stop()
    return PathResults(runs, redis_floor(redis_url, port), _commit(baseline))


def _commit(checkout: Path | None) -> str | None:
    if checkout is None:
        return None
    described = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h (%cs)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return described.stdout.strip() or str(checkout)


def baseline_from_environment() -> Path | None:
    value = os.environ.get("BENCH_BASELINE")
    return Path(value) if value else None
