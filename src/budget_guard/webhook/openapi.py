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


_UNAUTHORIZED = "no bearer token, or not a known one (see docs/webhook.md, Tokens and tenancy)"


def _refusals(forbidden: str | None = None) -> dict[str, Any]:
    """401 on every protected route; 403 where a tenant token can ask for another's."""
    answers = {"401": _json_response(_UNAUTHORIZED, _ref("ErrorBody"))}
    if forbidden is not None:
        answers["403"] = _json_response(forbidden, _ref("ErrorBody"))
    return answers


def _too_large() -> dict[str, Any]:
    return {
        "413": _json_response(
            "the body is larger than the API listener's limit (the larger of "
            "--max-body-bytes and 4 MiB)",
            _ref("ErrorBody"),
        )
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
            "securitySchemes": {
                "usageToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "the shared usage token (--usage-token-file; admin) or a token of "
                        "--api-tokens, which acts for its tenants only, or for all ('*')"
                    ),
                }
            },
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
                        **_refusals(
                            "a report is of a request of a tenant the token does not act "
                            "for (or of no tenant): nothing is settled"
                        ),
                        "404": _json_response(
                            "no reservation for the request id",
                            _ref("Settled"),
                        ),
                        "409": _json_response(
                            "the reservation refers to data Redis lost: nothing changed",
                            _ref("Settled"),
                        ),
                        **_too_large(),
                        "503": _json_response(
                            "the ledger cannot be reached (retry), or no configuration (no "
                            "prices) is loaded yet",
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
                        **_refusals(
                            "the request's identity is of a tenant the token does not act for "
                            "(or of none): nothing is reserved"
                        ),
                        **_too_large(),
                    },
                }
            },
            "/v1/budgets": {
                "get": {
                    "summary": "Every budget in force and where it stands this period",
                    "description": (
                        "An admin token sees every budget and the refused manifests; a tenant "
                        "token sees its tenants' budgets only (not those of no tenant, which "
                        "sum every tenant's spend) and no refused manifests."
                    ),
                    "security": [{"usageToken": []}],
                    "responses": {
                        "200": _json_response("the budgets", {"type": "object"}),
                        **_refusals(),
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
                        _query(
                            "tenant",
                            "only this tenant (repeatable; a tenant token: its tenants by "
                            "default, and only those)",
                            required=False,
                        ),
                    ],
                    "responses": {
                        "200": _json_response("the groups and the total", _ref("SpendAnswer")),
                        "400": _json_response(
                            "a malformed period or grouping, or per-user detail asked for days "
                            "past the per-user window",
                            _ref("ErrorBody"),
                        ),
                        **_refusals("a tenant asked for is not one the token acts for"),
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
                        **_refusals(),
                        "404": _json_response(
                            "no such budget in force, or one a tenant token does not see (of "
                            "another tenant, or of none): the same answer, so that a token "
                            "learns nothing of others' budgets",
                            _ref("ErrorBody"),
                        ),
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
