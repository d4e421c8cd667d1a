"""The OpenAPI document of the API listener, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from budget_guard import __version__
from budget_guard.webhook.api_models import (
    CheckCall,
    CheckOutcome,
    ErrorBody,
    Settled,
    SettledList,
    UsageReport,
)

_MODELS = (UsageReport, Settled, SettledList, ErrorBody, CheckCall, CheckOutcome)


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
                            "the ledger cannot be reached; retry",
                            _ref("Settled"),
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
                    "responses": {"200": _json_response("the budgets", {"type": "object"})},
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
