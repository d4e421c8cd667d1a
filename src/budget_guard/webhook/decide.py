"""One ext_authz decision, free of HTTP framework details.

identity -> body -> model and price -> token estimate -> budgets (in memory) ->
one atomic reservation in Redis -> answer. Everything that can be prepared ahead
(config, plans, encodings, tokenizers) is; the only I/O is the reservation.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from redis.exceptions import RedisError

from budget_guard.domain.budget import FailureMode
from budget_guard.domain.decision import BudgetCharge, Decision, reserves_worst_case
from budget_guard.domain.endpoints import Pricing, endpoint
from budget_guard.domain.failopen import FailOpenAllowance
from budget_guard.domain.pricing import ModelPrice, PricedModel, UnknownModelError, Usage
from budget_guard.domain.request_ids import new_request_id, request_id_for
from budget_guard.domain.resolution import Attribution, RequestIdentity
from budget_guard.domain.tokens import PrefixNotCounted, RequestEstimator, TokenEstimate
from budget_guard.domain.under_reporting import CountedPrompt
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.ledger import RequestIdTaken
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.admission import Admission
from budget_guard.webhook.body import (
    BadBody,
    ReadBody,
    check_size,
    model_from_path,
    plain_json,
    read_body,
)
from budget_guard.webhook.counted_prompts import CountedPrompts
from budget_guard.webhook.identity import IdentityError, IdentityResolver
from budget_guard.webhook.journal import DegradedJournal, Entry
from budget_guard.webhook.resent import ResentConversations
from budget_guard.webhook.responses import (
    OBSERVE_WOULD_DENY,
    CheckAnswer,
    allow_answer,
    degraded_answer,
    deny_answer,
    error_answer,
    free_answer,
    overloaded_answer,
    unavailable_answer,
)

log = logging.getLogger(__name__)

_MODEL_MAX = 200


class CheckRequest(NamedTuple):  # per request: a NamedTuple is cheap to build
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names (aiohttp's CIMultiDict is case-insensitive)
    body: bytes
    arrived: float  # time.perf_counter() when the check was taken on


@dataclass(frozen=True)
class DecisionSettings:
    max_body_bytes: int
    model_header: str
    strip_headers: tuple[str, ...]
    log_allowed: bool


class Reservations(Protocol):
    """Where a decision reserves: ``store.leases.LocalLeases`` (in process from a lease
    when one covers it, else in Redis)."""

    def decide_locally(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision | None: ...

    async def reserve_remotely(
        self,
        request_id: str,
        charges: tuple[BudgetCharge, ...],
        cost: int,
        now: dt.datetime,
        attribution: Attribution | None,
    ) -> Decision: ...

    def counters_of(self, charges: Sequence[BudgetCharge]) -> list[str]: ...

    def known_assigned(self, counter: str) -> int | None: ...

    def count_unrecorded(self, counter: str, cost: int) -> None: ...


def _valid_model(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= _MODEL_MAX and value.isprintable():
        return value
    return None


class Decider:
    def __init__(
        self,
        *,
        config: ConfigHolder,
        leases: Reservations,
        estimator: RequestEstimator,
        identity: IdentityResolver,
        journal: DegradedJournal,
        admission: Admission,
        settings: DecisionSettings,
        outage: Callable[[], int],
        clock: Callable[[], dt.datetime],
        counted: CountedPrompts | None = None,
        resent: ResentConversations | None = None,
    ) -> None:
        """``outage`` numbers the ledger's outages so far (see ``FailOpenAllowance``);
        ``counted`` keeps each allowed request's prompt count, to judge its usage report;
        ``resent`` reads a resent conversation from where its previous turn ended."""
        self._config = config
        self._leases = leases
        self._estimator = estimator
        self._identity = identity
        self._journal = journal
        self._admission = admission
        self._allowance = FailOpenAllowance(leases)
        self._settings = settings
        self._outage = outage
        self._clock = clock
        self._counted = counted if counted is not None else CountedPrompts()
        self._resent = resent

    @property
    def resent_hits(self) -> int:
        """Bodies read from where their conversation's previous turn ended."""
        return self._resent.hits if self._resent is not None else 0

    async def decide(self, request: CheckRequest) -> CheckAnswer:
        request_id = request_id_for(request.headers.get("x-request-id"))
        where = endpoint(request.method, request.path)
        if where.pricing is Pricing.FREE:  # not inference: nothing to price or reserve
            return free_answer(request_id, self._settings.strip_headers)
        config = self._config.current
        if config is None:
            return error_answer(
                503, "config_unavailable", "no budget configuration is loaded yet", request_id
            )
        try:
            identity = self._identity.resolve(request.headers)
        except IdentityError as error:
            return error_answer(401, "missing_identity", str(error), request_id)
        conversation = self._conversation(request, identity)
        try:
            body = self._read_body(request, conversation)
        except BadBody as error:
            return error_answer(error.status, error.code, error.message, request_id)
        model = self._model(body, request)
        if model is None:
            if where.pricing is Pricing.BY_BODY or not body.length:  # nothing to price
                return free_answer(request_id, self._settings.strip_headers)
            return error_answer(
                400,
                "missing_model",
                f"no model: {request.path.split('?', 1)[0]} is an inference endpoint; send "
                f"the model in the body's model field or the {self._settings.model_header} "
                "header",
                request_id,
            )
        try:
            priced = config.prices.price(model)
        except UnknownModelError as error:
            return error_answer(403, "unknown_model", str(error), request_id, model=model)
        scoped_model = model if priced.by_policy else priced.price.model
        identity = RequestIdentity(
            identity.tenant, identity.user, identity.tier, identity.feature, scoped_model
        )
        now = self._clock()
        charges = config.planner.plan(identity, now)
        estimate, cost = self._estimate(
            body, priced, reserves_worst_case(charges), request, conversation
        )
        attribution = Attribution(identity.tenant, identity.user, identity.feature, scoped_model)
        pending = _Pending(
            request_id, charges, cost, now, attribution, estimate, model, priced.price
        )
        return await self._reserve(pending, request.arrived)

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

    def _conversation(self, request: CheckRequest, identity: RequestIdentity) -> Hashable | None:
        """The key of the conversation a large JSON body may continue, if any."""
        resent, raw = self._resent, request.body
        if resent is None or len(raw) < resent.min_body or not plain_json(raw, request.headers):
            return None
        return resent.key((identity.tenant, identity.user, identity.feature), raw)

    def _read_body(self, request: CheckRequest, conversation: Hashable | None) -> ReadBody:
        raw = request.body
        if conversation is not None and self._resent is not None:
            check_size(raw, self._settings.max_body_bytes)
            resent = self._resent.read(conversation, raw)
            if resent is not None:
                return ReadBody(resent.document, len(raw), counted=resent.counted)
        return read_body(raw, request.headers, self._settings.max_body_bytes)

    def _estimate(
        self,
        body: ReadBody,
        priced: PricedModel,
        worst_case: bool,
        request: CheckRequest,
        conversation: Hashable | None,
    ) -> tuple[TokenEstimate, int]:
        document = body.document
        if document is None:
            estimate = self._estimator.estimate_from_length(body.length, priced.price, worst_case)
        else:
            try:
                estimate = self._estimator.estimate(
                    document, priced.price, worst_case, body.counted
                )
            except PrefixNotCounted:  # counted in another tokenizer: the body, read whole
                whole = read_body(request.body, request.headers, self._settings.max_body_bytes)
                document = whole.document or {}
                estimate = self._estimator.estimate(document, priced.price, worst_case)
            if conversation is not None and self._resent is not None:
                self._resent.remember(conversation, request.body, document, estimate)
        usage = Usage(input_tokens=estimate.input_tokens, output_tokens=estimate.output_tokens)
        return estimate, priced.price.cost_micros(usage)

    async def _reserve(self, pending: _Pending, arrived: float) -> CheckAnswer:
        leases = self._leases
        request_id = pending.request_id
        try:
            local = leases.decide_locally(request_id, *pending.reservation)
        except RequestIdTaken:  # a reused x-request-id: this request gets its own
            pending = pending._replace(request_id=new_request_id())
            local = leases.decide_locally(pending.request_id, *pending.reservation)
        if local is not None:  # from a lease: no Redis
            return self._answer(local, pending)
        if not self._admission.may_send(arrived):
            return overloaded_answer(request_id, "no time left to ask the ledger")
        try:
            try:
                decision = await leases.reserve_remotely(pending.request_id, *pending.reservation)
            except RequestIdTaken:  # taken in Redis by another process
                pending = pending._replace(request_id=new_request_id())
                decision = await leases.reserve_remotely(pending.request_id, *pending.reservation)
        except LedgerUnavailable as error:
            return await self._ledger_unavailable(pending, error, arrived, sent=error.sent)
        except RedisError as error:  # a script failed: a bug, but the decision must not 500
            log.error("reservation of %s failed: %s", pending.request_id, error)
            return await self._ledger_unavailable(pending, error, arrived, sent=True)
        return self._answer(decision, pending)

    def _answer(self, decision: Decision, pending: _Pending) -> CheckAnswer:
        request_id, cost = pending.request_id, pending.cost
        if not decision.allowed:
            answer = deny_answer(decision, request_id, pending.now)
            blocking = decision.blocking
            log.info(
                "denied %s: budget %s exhausted",
                request_id,
                blocking.charge.budget.id if blocking else "?",
                extra={"request_id": request_id, "decision": "deny", "cost_micros": cost},
            )
            return answer
        estimate = pending.estimate
        self._counted.keep(
            request_id,
            CountedPrompt(pending.model, estimate.input_tokens, estimate.estimator, pending.price),
        )
        answer = allow_answer(
            decision,
            request_id,
            pending.estimate.estimator,
            pending.model,
            self._settings.strip_headers,
        )
        if self._settings.log_allowed or answer.reason == OBSERVE_WOULD_DENY:
            log.info(
                "allowed %s (%s)",
                request_id,
                answer.reason,
                extra={"request_id": request_id, "decision": "allow", "cost_micros": cost},
            )
        return answer

    async def _ledger_unavailable(
        self, pending: _Pending, error: BaseException, arrived: float, *, sent: bool
    ) -> CheckAnswer:
        """Redis itself failed: each budget's failure mode decides, within its allowance."""
        request_id, charges, cost = pending.request_id, pending.charges, pending.cost
        closed = [c.budget.id for c in charges if c.budget.failure_mode is FailureMode.CLOSED]
        spent_allowance = None
        if not closed:
            spent_allowance = self._allowance.take(
                charges, self._leases.counters_of(charges), cost, self._outage()
            )
            if spent_allowance is not None:
                closed = [spent_allowance.budget.id]
        if not closed or sent:  # what let through is replayed; what may have landed, released
            entry = Entry(request_id, charges, cost, pending.now, pending.attribution, bool(closed))
            # On disk (with --journal-dir) before the answer, within the gateway's deadline.
            await self._journal.record(entry, within=self._admission.time_left(arrived) - 0.005)
        # One line per request at DEBUG: an outage under load would flood the log; the
        # channel logs each change of Redis's state at WARNING, and metrics count these.
        log.debug(
            "ledger unavailable for %s (%s: %s): %s",
            request_id,
            type(error).__name__,
            error,
            "fail closed" if closed else "fail open",
            extra={"request_id": request_id, "decision": "error" if closed else "allow"},
        )
        if closed:
            return unavailable_answer(
                request_id, closed, allowance_used=spent_allowance is not None
            )
        return degraded_answer(request_id, pending.estimate.estimator, cost)


class _Pending(NamedTuple):
    """A check that is priced and planned, waiting for its reservation."""

    request_id: str
    charges: tuple[BudgetCharge, ...]
    cost: int
    now: dt.datetime
    attribution: Attribution
    estimate: TokenEstimate
    model: str | None
    price: ModelPrice

    @property
    def reservation(
        self,
    ) -> tuple[tuple[BudgetCharge, ...], int, dt.datetime, Attribution]:
        """The arguments of a reservation after its request id."""
        return self.charges, self.cost, self.now, self.attribution
