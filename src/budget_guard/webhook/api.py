"""The API listener: ``POST /v1/usage``, ``POST /v1/check``, ``GET /v1/budgets``,
``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``. One ``ApiService`` holds
what they read; each handler is a method that does one thing and answers JSON (or the
metrics text)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict
from pydantic import ValidationError

from budget_guard.domain.usage import UsageReport
from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.usage import read_usage
from budget_guard.webhook import openapi
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.api_models import CheckCall
from budget_guard.webhook.api_tokens import ApiTokens, Caller, authenticate, forbidden
from budget_guard.webhook.check import CheckService
from budget_guard.webhook.decide import CheckRequest
from budget_guard.webhook.identity import IdentityError, IdentityResolver, JwksKeys
from budget_guard.webhook.ledger_access import LedgerAccess
from budget_guard.webhook.metrics import Metrics
from budget_guard.webhook.read_api import ReadApi
from budget_guard.webhook.responses import JSON, error_answer
from budget_guard.webhook.settlement import Ownership, SettlementService
from budget_guard.webhook.views import budgets_document

# A usage report list may be larger than the biggest check body.
MIN_API_BODY_BYTES = 4 * 1024**2


def api_body_limit(max_body_bytes: int) -> int:
    """The largest body the API listener reads (413 past it)."""
    return max(max_body_bytes, MIN_API_BODY_BYTES)


def _too_large_in_json(limit: int) -> Middleware:
    """aiohttp answers a body past the limit with a text 413; this one says it in JSON."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413,
                "body_too_large",
                f"the body is larger than {limit} bytes, this listener's limit",
            )

    return middleware


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type=JSON)


def _error(status: int, code: str, message: str) -> web.Response:
    body = error_answer(status, code, message).body
    return web.Response(status=status, body=body, content_type=JSON)


def _foreign(
    caller: Caller, reports: Sequence[UsageReport], owned: Sequence[Ownership]
) -> web.Response | None:
    """403 when any report is of a request the caller does not act for: none is settled."""
    foreign = [
        report.request_id
        for report, ownership in zip(reports, owned, strict=True)
        if ownership is Ownership.FOREIGN
    ]
    if not foreign:
        return None
    return forbidden(
        f"request {', '.join(repr(r) for r in foreign[:5])} is not of a tenant this token "
        f"acts for ({caller.describe()}): nothing was settled"
    )


@dataclass
class ApiService:
    config: ConfigHolder
    ledger: LedgerAccess
    settlement: SettlementService
    tokens: ApiTokens
    identity: IdentityResolver
    metrics: Metrics
    jwks: JwksKeys | None
    tokenizer_failures: dict[str, str]
    clock: Callable[[], dt.datetime]
    checks: CheckService

    def app(self, max_body_bytes: int) -> web.Application:
        limit = api_body_limit(max_body_bytes)
        app = web.Application(client_max_size=limit, middlewares=[_too_large_in_json(limit)])
        app.router.add_post("/v1/usage", self.post_usage)
        app.router.add_post("/v1/check", self.post_check)
        app.router.add_get("/v1/budgets", self.get_budgets)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/openapi.json", self.openapi_json)
        ReadApi(self.config, self.ledger, self.tokens, self.clock).routes(app)
        return app

    async def post_usage(self, request: web.Request) -> web.Response:
        caller = authenticate(self.tokens, request)
        if isinstance(caller, web.Response):
            return caller
        try:
            document = await request.json()
        except (ValueError, RecursionError) as error:  # also nested too deep, 4,300+ digits
            return _error(400, "invalid_json", f"the body is not valid JSON: {error}")
        service = self.settlement
        try:
            reports = service.parse(document)
            costs = service.price(reports)
        except ValueError as error:
            return _error(400, "invalid_usage", str(error))
        except LookupError as error:
            return _error(503, "config_unavailable", str(error))
        owned = await service.ownerships(caller, [report.request_id for report in reports])
        refused = _foreign(caller, reports, owned)
        if refused is not None:
            return refused
        results = [
            await service.settle_owned(report, cost, ownership)
            for report, cost, ownership in zip(reports, costs, owned, strict=True)
        ]
        if isinstance(document, list):
            return _json({"results": [result.body for result in results]})
        (result,) = results
        return _json(result.body, result.http_status)

    async def post_check(self, request: web.Request) -> web.Response:
        """A decision without Envoy (the application's guard): the check listener's
        status, headers and body, in a JSON body."""
        caller = authenticate(self.tokens, request)
        if isinstance(caller, web.Response):
            return caller
        try:
            call = CheckCall.model_validate(await request.json())
        except ValidationError as error:
            return _error(400, "invalid_check", str(error))
        except (ValueError, RecursionError) as error:  # also nested too deep, 4,300+ digits
            return _error(400, "invalid_json", f"the body is not valid JSON: {error}")
        headers = CIMultiDict({"content-type": JSON, **call.headers})
        if not self._may_check(caller, headers):
            return forbidden(
                f"the request's identity is not of a tenant this token acts for "
                f"({caller.describe()})"
            )
        body = json.dumps(call.body).encode() if call.body is not None else b""

        async def read(arrived: float) -> CheckRequest:
            return CheckRequest(call.method, call.path, headers, body, arrived)

        answer = await self.checks.check(headers, call.path, read)
        outcome = {
            "status": answer.status,
            "headers": answer.headers,
            "body": json.loads(answer.body) if answer.body else None,
        }
        return _json(outcome)

    def _may_check(self, caller: Caller, headers: CIMultiDict[str]) -> bool:
        """A tenant token asks only for its tenants' requests. An identity that does not
        resolve is the decider's to refuse (401 in the outcome, nothing reserved)."""
        if caller.is_admin:
            return True
        try:
            identity = self.identity.resolve(headers)
        except IdentityError:
            return True
        return caller.may_act_for(identity.tenant)

    async def get_budgets(self, request: web.Request) -> web.Response:
        """Every budget in force for an admin; a tenant token sees its tenants' budgets
        only (not those of no tenant: they sum every tenant's spend)."""
        caller = authenticate(self.tokens, request)
        if isinstance(caller, web.Response):
            return caller
        config = self.config.current
        if config is None:
            return _error(503, "config_unavailable", "no budget configuration is loaded yet")
        budgets = [
            budget for budget in config.snapshot.budgets if caller.may_act_for(budget.scope.tenant)
        ]
        ledger = self.ledger.operations
        try:
            usages = await read_usage(
                ledger.client, config.snapshot, self.clock(), ledger.keys, budgets
            )
        except LedgerUnavailable as error:
            return _error(503, "ledger_unavailable", f"the ledger cannot be reached: {error}")
        return _json(budgets_document(config, usages, rejections=caller.is_admin))

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    def _ledger_problem(self) -> str | None:
        """The ledger as checks see it (the decision path's connection, judged on every
        reply and stall); None when it answers."""
        channel = self.ledger.channel
        self.metrics.ledger_up.set(1 if channel.healthy else 0)
        return None if channel.healthy else channel.last_error

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready means a configuration is loaded. Redis is reported, not required: a pod
        taken out of its Service would leave Envoy to answer errors itself, and each
        budget's failureMode would never get its say."""
        config = self.config.current
        problems = []
        if config is None:
            problems.append(f"no config loaded: {self.config.last_error or 'loading'}")
        if self.jwks is not None and not self.jwks.loaded:
            problems.append(f"JWKS not loaded: {self.jwks.error}")
        ledger_error = self._ledger_problem()
        warnings = [
            f"tokenizer {encoding} not loaded ({error}): its models are estimated with a fallback"
            for encoding, error in self.tokenizer_failures.items()
        ]
        if ledger_error is not None:
            warnings.append(
                f"ledger unreachable ({ledger_error}): each budget's failureMode decides"
            )
        body: dict[str, Any] = {
            "status": "ready" if not problems else "not ready",
            "configVersion": config.version if config else None,
            "configError": self.config.last_error,
            "ledger": {"reachable": ledger_error is None, "error": ledger_error},
            "tokenizerFallbacks": self.tokenizer_failures,
            "degradedJournal": len(self.ledger.journal),
            "openLeases": self.ledger.leases.open_leases,
            "queuedLocalDecisions": self.ledger.leases.queued,
        }
        if problems:
            body["problems"] = problems
        if warnings:
            body["warnings"] = warnings
        return _json(body, 200 if not problems else 503)

    async def get_metrics(self, request: web.Request) -> web.Response:
        self._ledger_problem()
        exposition = self.metrics.exposition()
        return web.Response(body=exposition, content_type="text/plain", charset="utf-8")

    async def openapi_json(self, request: web.Request) -> web.Response:
        return _json(openapi.document())
