"""The answers the check listener gives (the words of a denial: ``domain.denial``).

Envoy allows a request only on exactly 200; any other status below 500 is a
deny whose status, body and (allowed) headers go to the client. So every deny is
a 4xx with a JSON body, and a decision is never a 5xx except the deliberate 503
of a fail-closed budget whose ledger is unreachable.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NamedTuple

from budget_guard.domain.decision import Decision
from budget_guard.domain.denial import BUDGET_EXCEEDED, denial_for
from budget_guard.domain.instants import rfc3339
from budget_guard.domain.money import format_usd

JSON = "application/json"

HEADER_REQUEST_ID = "x-budget-request-id"
HEADER_ESTIMATED_COST = "x-budget-estimated-cost-usd"
HEADER_REMAINING = "x-budget-remaining-usd"
HEADER_SOFT_LIMIT = "x-budget-soft-limit"
HEADER_MODEL_OVERRIDE = "x-budget-model-override"
HEADER_ESTIMATOR = "x-budget-estimator"
HEADER_WOULD_DENY = "x-budget-would-deny"
HEADER_DEGRADED = "x-budget-degraded"
HEADER_BURST_POOL = "x-budget-burst-pool"
HEADER_SCOPE = "x-budget-scope"
HEADER_BUDGET = "x-budget-name"
HEADER_RESET = "x-budget-reset"
HEADER_REMOVE = "x-envoy-auth-headers-to-remove"

FAIL_OPEN_REASON = "ledger_unavailable_fail_open"
FAIL_CLOSED_REASON = "ledger_unavailable"
LEDGER_FAILURE_REASONS = frozenset({FAIL_OPEN_REASON, FAIL_CLOSED_REASON})
OVERLOADED_REASON = "overloaded"
FREE_REASON = "not_inference"
OBSERVE_WOULD_DENY = "observe_would_deny"


class CheckAnswer(NamedTuple):  # per request: a NamedTuple is cheap to build
    status: int
    headers: dict[str, str]
    body: bytes
    decision: str  # allow | deny | error, for metrics and logs
    reason: str


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def error_answer(
    status: int, code: str, message: str, request_id: str | None = None, **extra: Any
) -> CheckAnswer:
    body: dict[str, Any] = {"type": code, "code": code, "message": message, **extra}
    if request_id:
        body["request_id"] = request_id
    headers = {"content-type": JSON}
    if request_id:
        headers[HEADER_REQUEST_ID] = request_id
    return CheckAnswer(status, headers, _json({"error": body}), "deny", code)


def allow_answer(
    decision: Decision,
    request_id: str,
    estimator: str,
    model: str | None,
    strip_headers: tuple[str, ...],
) -> CheckAnswer:
    headers = {
        HEADER_REQUEST_ID: request_id,
        HEADER_ESTIMATED_COST: format_usd(decision.cost_micros),
        HEADER_ESTIMATOR: estimator,
    }
    summary = decision.summary(model)
    if summary.remaining is not None:
        headers[HEADER_REMAINING] = format_usd(summary.remaining)
    if summary.tightest is not None:
        headers[HEADER_BUDGET] = summary.tightest
    if summary.soft_limit is not None:
        headers[HEADER_SOFT_LIMIT] = str(summary.soft_limit)
    if summary.model_override is not None:
        headers[HEADER_MODEL_OVERRIDE] = summary.model_override
    else:
        strip_headers = _without_client_override(strip_headers)
    reason = "within_budget"
    if summary.burst_pools:
        headers[HEADER_BURST_POOL] = ",".join(summary.burst_pools)
        reason = "burst_pool"
    if summary.would_deny:
        headers[HEADER_WOULD_DENY] = ",".join(summary.would_deny)
        reason = OBSERVE_WOULD_DENY
    headers[HEADER_REMOVE] = ",".join(strip_headers)
    return CheckAnswer(200, headers, b"", "allow", reason)


def free_answer(request_id: str, strip_headers: tuple[str, ...]) -> CheckAnswer:
    """A request that is not inference (model listing, files, token counting, health,
    or no body at all): allowed, nothing reserved (its id is for tracing only)."""
    headers = {
        HEADER_REQUEST_ID: request_id,
        HEADER_ESTIMATED_COST: "0.00",
        HEADER_ESTIMATOR: "none",
    }
    strip_headers = _without_client_override(strip_headers)
    headers[HEADER_REMOVE] = ",".join(strip_headers)
    return CheckAnswer(200, headers, b"", "allow", FREE_REASON)


def _without_client_override(strip_headers: tuple[str, ...]) -> tuple[str, ...]:
    """``strip_headers`` and a client's own ``x-budget-model-override``: only the guard
    names the cheaper model, which the gateway's ext_proc writes into the request (a
    client's copy would make a cheap, checked request a dear one at the provider)."""
    if HEADER_MODEL_OVERRIDE in strip_headers:
        return strip_headers
    return (*strip_headers, HEADER_MODEL_OVERRIDE)


def deny_answer(decision: Decision, request_id: str, now: dt.datetime) -> CheckAnswer:
    blocking = decision.blocking
    assert blocking is not None, "a denied decision names its blocking budget"
    denial = denial_for(blocking, decision.cost_micros, request_id, now)
    headers = {
        "content-type": JSON,
        "retry-after": str(denial.retry_after_seconds),
        HEADER_SCOPE: denial.scope,
        HEADER_BUDGET: denial.budget,
        HEADER_RESET: rfc3339(denial.resets_at),
        HEADER_REQUEST_ID: request_id,
    }
    return CheckAnswer(429, headers, _json({"error": denial.body()}), "deny", BUDGET_EXCEEDED)


def degraded_answer(request_id: str, estimator: str, cost: int) -> CheckAnswer:
    return CheckAnswer(
        200,
        {
            HEADER_REQUEST_ID: request_id,
            HEADER_DEGRADED: "ledger-unavailable",
            HEADER_ESTIMATED_COST: format_usd(cost),
            HEADER_ESTIMATOR: estimator,
        },
        b"",
        "allow",
        FAIL_OPEN_REASON,
    )


def unavailable_answer(
    request_id: str, closed_budgets: list[str], *, allowance_used: bool = False
) -> CheckAnswer:
    why = (
        "has let through all it may while the ledger is away (failOpenLimit)"
        if allowance_used
        else "fails closed"
    )
    answer = error_answer(
        503,
        "budget_unavailable",
        f"The budget ledger cannot be reached and budget {', '.join(closed_budgets)} "
        f"{why}; retry shortly.",
        request_id,
        budgets=closed_budgets,
    )
    return CheckAnswer(
        503, {**answer.headers, "retry-after": "1"}, answer.body, "error", FAIL_CLOSED_REASON
    )


def overloaded_answer(request_id: str, why: str) -> CheckAnswer:
    """A check this process could not decide before the gateway's deadline (see
    ``webhook.admission``): a deny the gateway passes on, to be retried."""
    answer = error_answer(
        429,
        OVERLOADED_REASON,
        f"The budget guard is overloaded ({why}) and did not decide this request; "
        "no budget was charged. Retry shortly.",
        request_id,
    )
    headers = {**answer.headers, "retry-after": "1", "x-should-retry": "true"}
    return CheckAnswer(429, headers, answer.body, "deny", OVERLOADED_REASON)
