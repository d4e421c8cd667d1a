"""The remote backend: the webhook's API decides (``POST /v1/check``, the check listener's
decision without Envoy) and settles (``POST /v1/usage``), with the usage token.

The webhook estimates and prices the request as it would at the gateway; this side
only reads its answers. The header names below are the check listener's
(``docs/webhook.md``, "Answers").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from budget_guard.client.backend import Actual, Admission
from budget_guard.client.errors import BudgetExceeded, BudgetUnavailable, RequestRefused
from budget_guard.client.loops import PerLoop
from budget_guard.client.tokens import TokenCounter
from budget_guard.domain.denial import BUDGET_EXCEEDED, Denial
from budget_guard.domain.money import format_usd, parse_usd
from budget_guard.domain.pricing import Usage
from budget_guard.domain.resolution import RequestIdentity
from budget_guard.domain.tokens import TokenizerSet
from budget_guard.loaders.files import load_price_table

log = logging.getLogger(__name__)

HEADER_REQUEST_ID = "x-budget-request-id"
HEADER_ESTIMATED_COST = "x-budget-estimated-cost-usd"
HEADER_REMAINING = "x-budget-remaining-usd"
HEADER_SOFT_LIMIT = "x-budget-soft-limit"
HEADER_MODEL_OVERRIDE = "x-budget-model-override"
HEADER_WOULD_DENY = "x-budget-would-deny"
HEADER_DEGRADED = "x-budget-degraded"


@dataclass(frozen=True)
class IdentityHeaders:
    """The webhook's ``--identity-*-header`` names (its defaults here)."""

    tenant: str = "x-budget-tenant"
    user: str = "x-budget-user"
    tier: str = "x-budget-tier"
    feature: str = "x-budget-feature"

    def of(self, identity: RequestIdentity) -> dict[str, str]:
        pairs = (
            (self.tenant, identity.tenant),
            (self.user, identity.user),
            (self.tier, identity.tier),
            (self.feature, identity.feature),
        )
        return {name: value for name, value in pairs if value is not None}


def _micros(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return parse_usd(value, name, allow_zero=True) if value is not None else None


def _admission(request_id: str, headers: Mapping[str, str]) -> Admission:
    soft_limit = headers.get(HEADER_SOFT_LIMIT)
    would_deny = headers.get(HEADER_WOULD_DENY)
    return Admission(
        request_id=headers.get(HEADER_REQUEST_ID, request_id),
        reserved_micros=_micros(headers, HEADER_ESTIMATED_COST) or 0,
        remaining_micros=_micros(headers, HEADER_REMAINING),
        soft_limit=int(soft_limit) if soft_limit else None,
        model_override=headers.get(HEADER_MODEL_OVERRIDE),
        would_deny=tuple(would_deny.split(",")) if would_deny else (),
        degraded=HEADER_DEGRADED in headers,
    )


def _refusal(status: int, body: Any) -> Exception:
    """The exception for a check the webhook did not allow."""
    error = body.get("error", {}) if isinstance(body, Mapping) else {}
    code, message = str(error.get("code", status)), str(error.get("message", body))
    if code == BUDGET_EXCEEDED:
        return BudgetExceeded(Denial.from_body(error))
    if status == 503 or code == "overloaded":
        return BudgetUnavailable(message)
    return RequestRefused(status, code, message)


def usage_report(usage: Usage) -> dict[str, int]:
    """``Usage`` in Anthropic's shape, whose fields are exactly ``Usage``'s (cache reads
    and writes apart from input), so the webhook reads back the same numbers."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


class RemoteBackend:
    """``api_url``: the webhook's API listener (``http://budget-guard:8081``); ``token``:
    a token of that listener, best a tenant token (``--api-tokens``) of the tenants the
    guard acts for (another tenant's request is refused, ``RequestRefused`` 403), or the
    shared usage token (``--usage-token-file``, admin). ``pricing`` only serves counting
    the output of streams that end without usage; the webhook prices every call."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        identity_headers: IdentityHeaders | None = None,
        timeout_seconds: float = 5.0,
        pricing: str | Path | None = None,
        tokenizers: TokenizerSet | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._authorization = {"authorization": f"Bearer {token}"}
        self._identity_headers = identity_headers or IdentityHeaders()
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._sessions = PerLoop(lambda: aiohttp.ClientSession(timeout=timeout))
        prices = load_price_table(Path(pricing) if pricing is not None else None)
        self._tokens = TokenCounter(prices, tokenizers)

    @property
    def tokens(self) -> TokenCounter:
        return self._tokens

    async def reserve(
        self, request_id: str, identity: RequestIdentity, request: Mapping[str, Any]
    ) -> Admission:
        return await self._check(request_id, identity, request)

    async def settle(self, admission: Admission, model: str, actual: Actual) -> int | None:
        report: dict[str, Any] = {"request_id": admission.request_id}
        if model:
            report["model"] = model
        if isinstance(actual, int):
            report["cost_usd"] = format_usd(actual)
        else:
            report["usage"] = usage_report(actual)
        try:
            status, answer = await self._post("/v1/usage", report)
        except BudgetUnavailable as error:
            log.warning("settlement of %s failed: %s", admission.request_id, error)
            return None
        charged = answer.get("charged_usd") if isinstance(answer, Mapping) else None
        if status >= 300 or charged is None:
            log.warning("settlement of %s answered %s: %s", admission.request_id, status, answer)
            return None
        return parse_usd(str(charged), "charged_usd", allow_zero=True)

    async def check_room(
        self, identity: RequestIdentity, next_request: Mapping[str, Any] | None
    ) -> None:
        """A check of ``next_request``, released at once; without one, a check of nothing
        (it costs nothing and is denied only by a budget already past its limit)."""
        admission = await self._check("", identity, next_request)
        if next_request is not None and not admission.degraded:
            await self.settle(admission, "", 0)

    async def aclose(self) -> None:
        session = self._sessions.pop()
        if session is not None:
            await session.close()

    async def _check(
        self, request_id: str, identity: RequestIdentity, request: Mapping[str, Any] | None
    ) -> Admission:
        headers = self._identity_headers.of(identity)
        if request_id:
            headers["x-request-id"] = request_id
        status, answer = await self._post("/v1/check", {"headers": headers, "body": request})
        if status != 200:
            raise _refusal(status, answer)
        if answer["status"] != 200:
            raise _refusal(answer["status"], answer["body"])
        return _admission(request_id, answer["headers"])

    async def _post(self, path: str, payload: Mapping[str, Any]) -> tuple[int, Any]:
        session = self._sessions.get()
        body = json.dumps(payload, default=str)
        headers = {**self._authorization, "content-type": "application/json"}
        try:
            async with session.post(self._api_url + path, data=body, headers=headers) as answer:
                return answer.status, await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
            raise BudgetUnavailable(
                f"the budget guard webhook at {self._api_url} cannot be reached: {error!r}"
            ) from error
