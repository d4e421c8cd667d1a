"""The Decider, whole, with no Redis: identity, body, price, estimate, budgets, the
reservation (an in-memory stand-in for the leases), and the answer the gateway gets.
The real reservations are proven on a real Redis in tests/integration/; here each
path of the decision is pinned down fast."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pytest
from multidict import CIMultiDict
from redis.asyncio import Redis

from budget_guard.domain.decision import BudgetCharge, BudgetState, BudgetVerdict, Decision
from budget_guard.domain.manifest import parse_manifests
from budget_guard.domain.pricing import default_price_table
from budget_guard.domain.resolution import Attribution
from budget_guard.domain.tokens import RequestEstimator
from budget_guard.loaders.tokenizers import load_tokenizers
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.ledger import Ledger
from budget_guard.webhook.active_config import ConfigHolder, compile_config
from budget_guard.webhook.admission import Admission, AdmissionSettings
from budget_guard.webhook.decide import CheckRequest, Decider, DecisionSettings
from budget_guard.webhook.identity import HeaderIdentity
from budget_guard.webhook.journal import DegradedJournal
from budget_guard.webhook.responses import CheckAnswer
from budget_guard.webhook.settings import IdentitySettings
from tests.factories import budget_manifest

NOW = dt.datetime(2030, 5, 10, 12, 0, tzinfo=dt.UTC)
ACME = {"x-budget-tenant": "acme", "x-budget-user": "ann"}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


class InMemoryReservations:
    """Counters in a dict, all-or-nothing like reserve.lua; or an unreachable ledger."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}
        self.unavailable: LedgerUnavailable | None = None
        self.unrecorded: dict[str, int] = {}

    def decide_locally(self, *args: Any) -> Decision | None:
        return None  # no leases here: every decision is "remote"

    async def reserve_remotely(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision:
        if self.unavailable is not None:
            raise self.unavailable
        counters = self.counters_of(charges)
        fits = [
            not charge.budget.enforces or self.used.get(key, 0) + cost <= charge.effective_limit
            for charge, key in zip(charges, counters, strict=True)
        ]
        if all(fits):
            for key in counters:
                self.used[key] = self.used.get(key, 0) + cost
        states = tuple(
            BudgetState(
                charge,
                self.used.get(key, 0),
                BudgetVerdict.FITS if ok else BudgetVerdict.DENIES,
            )
            for charge, key, ok in zip(charges, counters, fits, strict=True)
        )
        return Decision(request_id, all(fits), cost, states)

    def counters_of(self, charges: Sequence[BudgetCharge]) -> list[str]:
        return [f"{c.budget.id}:{c.window.key}:{c.subject}" for c in charges]

    def known_assigned(self, counter: str) -> int | None:
        return self.used.get(counter)

    def count_unrecorded(self, counter: str, cost: int) -> None:
        self.unrecorded[counter] = self.unrecorded.get(counter, 0) + cost


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def budget(name: str, limit: str, **spec: Any) -> dict[str, Any]:
    return budget_manifest(name, limit, namespace="team", **spec)


def decider(
    budgets: list[dict[str, Any]], reservations: InMemoryReservations, clock: Clock | None = None
) -> Decider:
    config = ConfigHolder()
    config.install(compile_config(parse_manifests(budgets), default_price_table(), "v1", "test"))
    return Decider(
        config=config,
        leases=reservations,
        estimator=RequestEstimator(load_tokenizers(["cl100k_base"]).tokenizers),
        identity=HeaderIdentity(IdentitySettings()),
        # Only recorded into here: a client that never connects.
        journal=DegradedJournal(Ledger(Redis.from_url("redis://127.0.0.1:1/0"))),
        admission=Admission(AdmissionSettings(), clock or Clock()),
        settings=DecisionSettings(
            max_body_bytes=1 << 20,
            model_header="x-budget-model",
            strip_headers=(),
            log_allowed=False,
        ),
        outage=lambda: 1,
        clock=lambda: NOW,
    )


async def check(
    subject: Decider, body: Any = CHAT, headers: dict[str, str] | None = None, arrived: float = 0.0
) -> CheckAnswer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = CheckRequest(
        "POST",
        "/v1/chat/completions",
        CIMultiDict(ACME if headers is None else headers),
        raw,
        arrived,
    )
    return await subject.decide(request)


def error_of(answer: CheckAnswer) -> dict[str, Any]:
    return dict(json.loads(answer.body)["error"])


async def test_allowed_until_the_limit_then_a_429_that_says_whose_budget_and_when() -> None:
    reservations = InMemoryReservations()
    subject = decider([budget("acme", "0.0005", tenant="acme")], reservations)
    first = await check(subject)
    assert (first.status, first.decision) == (200, "allow")
    assert first.headers["x-budget-estimator"] == "tiktoken:cl100k_base(fallback for o200k_base)"
    cost = first.headers["x-budget-estimated-cost-usd"]
    assert first.headers["x-budget-remaining-usd"] < "0.0005"
    answers = [await check(subject) for _ in range(20)]
    denied = next(a for a in answers if a.status == 429)
    error = error_of(denied)
    assert error["code"] == "budget_exceeded"
    assert error["budget"] == "team/acme" and error["requested_usd"] == cost
    assert "tenant acme's monthly budget 'team/acme'" in error["message"]
    assert denied.headers["x-budget-reset"] == "2030-06-01T00:00:00Z"
    assert int(denied.headers["retry-after"]) > 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (CHAT, {}, 401, "missing_identity"),
        ({"messages": []}, ACME, 400, "missing_model"),
        ({**CHAT, "model": "no-such-model"}, ACME, 403, "unknown_model"),
        (b'{"model": "gpt-4o", ', ACME, 400, "invalid_json"),
    ],
)
async def test_bad_requests_are_refused_with_what_to_fix(
    body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    reservations = InMemoryReservations()
    answer = await check(
        decider([budget("acme", "10", tenant="acme")], reservations), body, headers
    )
    assert (answer.status, error_of(answer)["code"]) == (status, code)
    assert reservations.used == {}  # nothing reserved


async def test_a_check_too_late_to_ask_redis_is_shed_and_charged_nowhere() -> None:
    reservations, clock = InMemoryReservations(), Clock()
    subject = decider([budget("acme", "10", tenant="acme")], reservations, clock)
    clock.now = 0.151  # past --gateway-timeout-ms (200) minus --ledger-timeout-ms (50)
    answer = await check(subject, arrived=0.0)
    assert (answer.status, error_of(answer)["code"]) == (429, "overloaded")
    assert answer.headers["retry-after"] == "1"
    assert reservations.used == {}


async def test_an_unreachable_ledger_fails_open_within_the_allowance_then_closed() -> None:
    reservations = InMemoryReservations()
    reservations.unavailable = LedgerUnavailable("connection refused", sent=False)
    subject = decider(
        [
            budget("acme", "10", tenant="acme", failOpenLimit="0.0001"),
            budget("strict", "10", tenant="strict", failureMode="Closed"),
        ],
        reservations,
    )
    opened = [await check(subject) for _ in range(5)]
    assert opened[0].status == 200 and opened[0].headers["x-budget-degraded"]
    assert opened[-1].status == 503  # past its failOpenLimit: closed
    assert "failOpenLimit" in error_of(opened[-1])["message"]
    assert sum(reservations.unrecorded.values()) <= 100  # micro-USD
    closed = await check(subject, headers={"x-budget-tenant": "strict", "x-budget-user": "u"})
    assert (closed.status, error_of(closed)["code"]) == (503, "budget_unavailable")


async def test_a_worst_case_budget_reserves_the_models_maximum_output() -> None:
    reservations = InMemoryReservations()
    subject = decider([budget("acme", "10", tenant="acme", reservation="WorstCase")], reservations)
    capped = await check(subject)
    uncapped = await check(subject, {k: v for k, v in CHAT.items() if k != "max_tokens"})
    assert capped.headers["x-budget-estimator"] == "upper-bound:bytes"
    assert float(uncapped.headers["x-budget-estimated-cost-usd"]) > 50 * float(
        capped.headers["x-budget-estimated-cost-usd"]
    )
