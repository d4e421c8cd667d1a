"""The OpenAPI document of the API listener, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from budget_guard import __version__
from budget_guard.webhook.api_models import (
    BudgetDetail,
    CheckCall,
    CheckOutcome,
    ErrorBody,
    Settled,
    SettledList,
    SpendAnswer,
    UsageReport,
)

_MODELS = (
    UsageReport,
    Settled,
    SettledList,
    ErrorBody,
    CheckCall,
    CheckOutcome,
    SpendAnswer,
    BudgetDetail,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas() -> dict[str, Any]:
    """Every model's JSON schema, nested models as components of their own."""
    _, top = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    return dict(top.get("$defs", {}))


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, *, required: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLM Budget Guard webhook API",
            "version": __version__,
            "description": (
                "The API listener of the ext_authz webhook. The check listener (another port) "
                "answers Envoy's ext_authz HTTP checks on every method and path: 200 allows, "
                "429 means a budget is exhausted."
            ),
        },
        "components": {
            "securitySchemes": {"usageToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": {
            "/v1/usage": {
                "post": {
                    "summary": "Settle the actual usage of checked requests, exactly once",
                    "security": [{"usageToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref("UsageReport"),
                                        {
                                            "type": "array",
                                            "items": _ref("UsageReport"),
                                            "minItems": 1,
                                            "maxItems": 1000,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json_response(
                            "settled, or settled before (one report), or the result of each "
                            "report (a list)",
                            {"oneOf": [_ref("Settled"), _ref("SettledList")]},
                        ),
                        "202": _json_response(
                            "recorded; settled once the ledger is back",
                            _ref("Settled"),
                        ),
                        "400": _json_response(
                            "a malformed report; the message names the field",
                            _ref("ErrorBody"),
                        ),
                        "401": _json_response("no or wrong bearer token", _ref("ErrorBody")),
                        "404": _json_response(
                            "no reservation for the request id",
                            _ref("Settled"),
                        ),
                        "503": _json_response(
                            "the ledger cannot be reached (a Settled), or no configuration "
                            "is loaded yet (an ErrorBody); retry",
                            {"oneOf": [_ref("Settled"), _ref("ErrorBody")]},
                        ),
                    },
                }
            },
            "/v1/check": {
                "post": {
                    "summary": "Decide a request as the check listener would, without Envoy",
                    "description": (
                        "The application's guard (budget_guard.client.RemoteBackend) asks "
                        "here: an allowed request is reserved like a check from Envoy; "
                        "settle it with POST /v1/usage."
                    ),
                    "security": [{"usageToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("CheckCall")}},
                    },
                    "responses": {
                        "200": _json_response(
                            "the decision: the check listener's status, headers and body",
                            _ref("CheckOutcome"),
                        ),
                        "400": _json_response("not a check call", _ref("ErrorBody")),
                        "401": _json_response("no or wrong bearer token", _ref("ErrorBody")),
                    },
                }
            },
            "/v1/budgets": {
                "get": {
                    "summary": "Every budget in force and where it stands this period",
                    "responses": {
                        "200": _json_response("the budgets", {"type": "object"}),
                        "503": _json_response(
                            "no configuration yet, or the ledger cannot be reached",
                            _ref("ErrorBody"),
                        ),
                    },
                }
            },
            "/v1/spend": {
                "get": {
                    "summary": "Attributed spend of UTC days, grouped (the chargeback data)",
                    "security": [{"usageToken": []}],
                    "parameters": [
                        _query("from", "the first UTC day, 2026-11-01, or a month, 2026-11"),
                        _query("to", "the last UTC day (included), or a month"),
                        _query(
                            "groupBy",
                            "comma-separated: tenant, feature, model, user, day (default "
                            "tenant,feature,model)",
                            required=False,
                        ),
                        _query("tenant", "only this tenant (repeatable)", required=False),
                    ],
                    "responses": {
                        "200": _json_response("the groups and the total", _ref("SpendAnswer")),
                        "400": _json_response(
                            "a malformed period or grouping, or per-user detail asked for days "
                            "past the per-user window",
                            _ref("ErrorBody"),
                        ),
                        "401": _json_response("no or wrong bearer token", _ref("ErrorBody")),
                        "503": _json_response("the ledger cannot be reached", _ref("ErrorBody")),
                    },
                }
            },
            "/v1/budgets/{namespace}/{name}": {
                "get": {
                    "summary": "One budget: where it stands, its review, forecast and history",
                    "security": [{"usageToken": []}],
                    "parameters": [
                        {
                            "name": "namespace",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _query(
                            "from",
                            "the history's first local day (default: what the review reads)",
                            required=False,
                        ),
                        _query("to", "the history's last local day", required=False),
                    ],
                    "responses": {
                        "200": _json_response("the budget", _ref("BudgetDetail")),
                        "400": _json_response("a malformed period", _ref("ErrorBody")),
                        "401": _json_response("no or wrong bearer token", _ref("ErrorBody")),
                        "404": _json_response("no such budget in force", _ref("ErrorBody")),
                        "503": _json_response(
                            "no configuration yet, or the ledger cannot be reached",
                            _ref("ErrorBody"),
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {"200": _json_response("alive", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "A configuration is loaded (the ledger's health is a detail)",
                    "responses": {
                        "200": _json_response("ready", {"type": "object"}),
                        "503": _json_response("not ready, with the reasons", {"type": "object"}),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
