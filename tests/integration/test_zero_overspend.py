"""4 processes x 50 tasks against one tenant: the ledger never lets a limit be exceeded."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest
from redis import Redis

from budget_guard.domain.decision import plan_charges
from budget_guard.domain.resolution import RequestIdentity
from budget_guard.localservices import RedisServer
from budget_guard.store.keys import KeySchema
from tests.integration import concurrency_worker
from tests.integration.concurrency_worker import NOW, USERS, assert_varied_costs_fit, snapshot

pytestmark = pytest.mark.redis

PROCESSES, TASKS = 4, 50


def hammer(
    redis_url: str, costs: list[int], limits: tuple[str, str, str]
) -> list[tuple[bool, int, str]]:
    Redis.from_url(redis_url).flushdb()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [
            pool.submit(concurrency_worker.run, redis_url, worker, TASKS, costs, limits)
            for worker in range(PROCESSES)
        ]
        return [outcome for future in futures for outcome in future.result()]


def counters(redis_url: str, limits: tuple[str, str, str]) -> dict[str, int]:
    client = Redis.from_url(redis_url)
    keys = KeySchema()
    compiled = snapshot(*limits)
    used: dict[str, int] = Counter()
    for index in range(USERS):
        for charge in plan_charges(
            compiled, RequestIdentity(tenant="acme", user=f"user-{index}"), NOW
        ):
            key = keys.counter(charge.budget, charge.window, charge.subject)
            reserved = int(client.hget(key, "used") or 0)
            name = charge.budget.ref.name
            if name == "per-user":
                used[f"user-{index}"] = reserved
            else:
                used[name] = reserved  # shared counters: the same key for every user
    return used


def test_exactly_n_requests_fit(redis_server: RedisServer) -> None:
    cost = 1_000
    # The tenant budget holds exactly 37 requests; per-user (5 each, 50 in all) and
    # global (40) leave it the binding constraint among 200 concurrent attempts.
    limits = ("0.005", "0.037", "0.040")
    outcomes = hammer(redis_server.url, [cost], limits)
    allowed = [o for o in outcomes if o[0]]
    assert len(outcomes) == PROCESSES * TASKS
    assert len(allowed) == 37
    used = counters(redis_server.url, limits)
    assert used["tenant"] == used["global"] == 37 * cost
    per_user = Counter(user for _, _, user in allowed)
    for index in range(USERS):
        user = f"user-{index}"
        assert used[user] == per_user[user] * cost <= 5 * cost


def test_varied_costs_never_overspend(redis_server: RedisServer) -> None:
    limits = ("0.009", "0.050", "0.045")
    outcomes = hammer(redis_server.url, [700, 1_000, 2_300], limits)
    assert_varied_costs_fit(outcomes, counters(redis_server.url, limits))
