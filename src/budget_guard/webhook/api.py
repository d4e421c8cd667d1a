"""The API listener: ``POST /v1/usage``, ``POST /v1/check``, ``GET /v1/budgets``,
``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``. One ``ApiService`` holds
what they read; each handler is a method that does one thing and answers JSON (or the
metrics text)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pydantic import ValidationError

from budget_guard.store.errors import LedgerUnavailable
from budget_guard.store.usage import read_usage
from budget_guard.webhook import openapi
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.api_models import CheckCall
from budget_guard.webhook.check import CheckService
from budget_guard.webhook.decide import CheckRequest
from budget_guard.webhook.identity import JwksKeys
from budget_guard.webhook.ledger_access import LedgerAccess
from budget_guard.webhook.metrics import Metrics
from budget_guard.webhook.read_api import ReadApi
from budget_guard.webhook.responses import JSON, error_answer
from budget_guard.webhook.settlement import SettlementService, UsageTokens
from budget_guard.webhook.views import budgets_document

# A usage report list may be larger than the biggest check body.
MIN_API_BODY_BYTES = 4 * 1024**2


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type=JSON)


def _error(status: int, code: str, message: str) -> web.Response:
    body = error_answer(status, code, message).body
    return web.Response(status=status, body=body, content_type=JSON)


@dataclass
class ApiService:
    config: ConfigHolder
    ledger: LedgerAccess
    settlement: SettlementService
    usage_tokens: UsageTokens
    metrics: Metrics
    jwks: JwksKeys | None
    tokenizer_failures: dict[str, str]
    clock: Callable[[], dt.datetime]
    checks: CheckService

    def app(self, max_body_bytes: int) -> web.Application:
        app = web.Application(client_max_size=max(max_body_bytes, MIN_API_BODY_BYTES))
        app.router.add_post("/v1/usage", self.post_usage)
        app.router.add_post("/v1/check", self.post_check)
        app.router.add_get("/v1/budgets", self.get_budgets)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/openapi.json", self.openapi_json)
        ReadApi(self.config, self.ledger, self.usage_tokens, self.clock).routes(app)
        return app

    async def post_usage(self, request: web.Request) -> web.Response:
        problem = self.usage_tokens.problem(request.headers.get("authorization", ""))
        if problem is not None:
            return _error(401, "unauthorized", problem)
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
        results = [
            await service.settle(report, cost) for report, cost in zip(reports, costs, strict=True)
        ]
        if isinstance(document, list):
            return _json({"results": [result.body for result in results]})
        (result,) = results
        return _json(result.body, result.http_status)

    async def post_check(self, request: web.Request) -> web.Response:
        """A decision without Envoy (the application's guard): the check listener's
        status, headers and body, in a JSON body."""
        problem = self.usage_tokens.problem(request.headers.get("authorization", ""))
        if problem is not None:
            return _error(401, "unauthorized", problem)
        try:
            call = CheckCall.model_validate(await request.json())
        except ValidationError as error:
            return _error(400, "invalid_check", str(error))
        except (ValueError, RecursionError) as error:  # also nested too deep, 4,300+ digits
            return _error(400, "invalid_json", f"the body is not valid JSON: {error}")
        headers = CIMultiDict({"content-type": JSON, **call.headers})
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

    async def get_budgets(self, request: web.Request) -> web.Response:
        config = self.config.current
        if config is None:
            return _error(503, "config_unavailable", "no budget configuration is loaded yet")
        ledger = self.ledger.operations
        try:
            usages = await read_usage(ledger.client, config.snapshot, self.clock(), ledger.keys)
        except LedgerUnavailable as error:
            return _error(503, "ledger_unavailable", f"the ledger cannot be reached: {error}")
        return _json(budgets_document(config, usages))

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
