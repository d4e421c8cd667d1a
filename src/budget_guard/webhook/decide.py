"""One ext_authz decision, free of HTTP framework details.

identity -> body -> model and price -> token estimate -> budgets (in memory) ->
one atomic reservation in Redis -> answer. Everything that can be prepared ahead
(config, plans, encodings, tokenizers) is; the only I/O is the reservation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from redis.exceptions import RedisError

from budget_guard.domain.budget import FailureMode
from budget_guard.domain.decision import BudgetCharge, Decision
from budget_guard.domain.pricing import PricedModel, UnknownModelError, Usage
from budget_guard.domain.resolution import RequestIdentity
from budget_guard.domain.tokens import RequestEstimator, TokenEstimate
from budget_guard.store.leases import LocalLeases
from budget_guard.store.ledger import Attribution, RequestIdTaken
from budget_guard.webhook.body import BadBody, ReadBody, model_from_path, read_body
from budget_guard.webhook.config import ConfigHolder
from budget_guard.webhook.identity import IdentityError, IdentityResolver
from budget_guard.webhook.journal import DegradedJournal, Entry
from budget_guard.webhook.responses import (
    CheckAnswer,
    allow_answer,
    degraded_answer,
    deny_answer,
    error_answer,
    unavailable_answer,
)

log = logging.getLogger(__name__)

_REQUEST_ID_MAX = 200
_MODEL_MAX = 200


class CheckRequest(NamedTuple):  # per request: a NamedTuple is cheap to build
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names (aiohttp's CIMultiDict is case-insensitive)
    body: bytes


@dataclass(frozen=True)
class DecisionSettings:
    max_body_bytes: int
    ledger_timeout_seconds: float
    model_header: str
    strip_headers: tuple[str, ...]
    log_allowed: bool


def _request_id(headers: Mapping[str, str]) -> str:
    incoming = headers.get("x-request-id", "").strip()
    if (
        incoming
        and len(incoming) <= _REQUEST_ID_MAX
        and incoming.isprintable()
        and " " not in incoming
        and "," not in incoming
    ):
        return incoming
    return os.urandom(16).hex()


def _valid_model(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MODEL_MAX and value.isprintable():
        return value
    return None


class Decider:
    def __init__(
        self,
        *,
        holder: ConfigHolder,
        ledger: LocalLeases,
        estimator: RequestEstimator,
        identity: IdentityResolver,
        journal: DegradedJournal,
        settings: DecisionSettings,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._holder = holder
        self._ledger = ledger
        self._estimator = estimator
        self._identity = identity
        self._journal = journal
        self._settings = settings
        self._clock = clock

    async def decide(self, request: CheckRequest) -> CheckAnswer:
        request_id = _request_id(request.headers)
        config = self._holder.current
        if config is None:
            return error_answer(
                503, "config_unavailable", "no budget configuration is loaded yet", request_id
            )
        try:
            identity = self._identity.resolve(request.headers)
        except IdentityError as error:
            return error_answer(401, "missing_identity", str(error), request_id)
        try:
            body = read_body(request.body, request.headers, self._settings.max_body_bytes)
        except BadBody as error:
            return error_answer(error.status, error.code, error.message, request_id)
        model = self._model(body, request)
        if model is None and body.length:
            return error_answer(
                400,
                "missing_model",
                f"no model: send it in the body's model field or the {self._settings.model_header} "
                "header",
                request_id,
            )
        try:
            priced = config.prices.price(model) if model is not None else None
        except UnknownModelError as error:
            return error_answer(403, "unknown_model", str(error), request_id, model=model)
        estimate, cost = self._estimate(body, priced)
        scoped_model = priced.price.model if priced is not None and not priced.by_policy else model
        identity = RequestIdentity(
            identity.tenant, identity.user, identity.tier, identity.feature, scoped_model
        )
        now = self._clock()
        charges = config.planner.plan(identity, now)
        attribution = Attribution(identity.tenant, identity.user, identity.feature, scoped_model)
        return await self._reserve(request_id, charges, cost, now, attribution, estimate, model)

    def _model(self, body: ReadBody, request: CheckRequest) -> str | None:
        if body.document is not None:
            from_body = _valid_model(body.document.get("model"))
            if from_body is not None:
                return from_body
        return (
            _valid_model(request.headers.get(self._settings.model_header))
            or body.model_hint
            or model_from_path(request.path)
        )

    def _estimate(self, body: ReadBody, priced: PricedModel | None) -> tuple[TokenEstimate, int]:
        if priced is None:  # no model and no body (e.g. GET /v1/models): nothing to price
            return TokenEstimate(0, 0, "none"), 0
        if body.document is not None:
            estimate = self._estimator.estimate(body.document, priced.price)
        else:
            estimate = self._estimator.estimate_from_length(body.length, priced.price)
        usage = Usage(input_tokens=estimate.input_tokens, output_tokens=estimate.output_tokens)
        return estimate, priced.price.cost_micros(usage)

    async def _reserve(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution,
        estimate: TokenEstimate,
        model: str | None,
    ) -> CheckAnswer:
        leases = self._ledger
        try:
            local = leases.decide_locally(request_id, charges, cost, now, attribution)
        except RequestIdTaken:  # a reused x-request-id: this request gets its own
            request_id = os.urandom(16).hex()
            local = leases.decide_locally(request_id, charges, cost, now, attribution)
        if local is not None:  # from a lease: no Redis, no timer
            return self._answer(local, request_id, cost, now, estimate, model)
        try:
            # asyncio.timeout, not wait_for: no extra task per request on the hot path.
            async with asyncio.timeout(self._settings.ledger_timeout_seconds):
                try:
                    decision = await leases.reserve_remotely(
                        request_id, charges, cost, now, attribution
                    )
                except RequestIdTaken:  # taken in Redis by another process
                    request_id = os.urandom(16).hex()
                    decision = await leases.reserve_remotely(
                        request_id, charges, cost, now, attribution
                    )
        except (RedisError, OSError, TimeoutError) as error:
            return self._ledger_unavailable(
                request_id, charges, cost, now, attribution, estimate, error
            )
        return self._answer(decision, request_id, cost, now, estimate, model)

    def _answer(
        self,
        decision: Decision,
        request_id: str,
        cost: int,
        now: dt.datetime,
        estimate: TokenEstimate,
        model: str | None,
    ) -> CheckAnswer:
        if not decision.allowed:
            answer = deny_answer(decision, request_id, now)
            blocking = decision.blocking
            log.info(
                "denied %s: budget %s exhausted",
                request_id,
                blocking.charge.budget.id if blocking else "?",
                extra={"request_id": request_id, "decision": "deny", "cost_micros": cost},
            )
            return answer
        answer = allow_answer(
            decision, request_id, estimate.estimator, model, self._settings.strip_headers
        )
        if self._settings.log_allowed or decision.would_deny:
            log.info(
                "allowed %s (%s)",
                request_id,
                answer.reason,
                extra={"request_id": request_id, "decision": "allow", "cost_micros": cost},
            )
        return answer

    def _ledger_unavailable(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution,
        estimate: TokenEstimate,
        error: BaseException,
    ) -> CheckAnswer:
        closed = [c.budget.id for c in charges if c.budget.failure_mode is FailureMode.CLOSED]
        entry = Entry(request_id, charges, cost, now, attribution, release=bool(closed))
        self._journal.record(entry)
        log.warning(
            "ledger unavailable for %s (%s): %s",
            request_id,
            type(error).__name__ or "timeout",
            "fail closed" if closed else "fail open",
            extra={"request_id": request_id, "decision": "error" if closed else "allow"},
        )
        if closed:
            return unavailable_answer(request_id, closed)
        return degraded_answer(request_id, estimate.estimator, cost)
