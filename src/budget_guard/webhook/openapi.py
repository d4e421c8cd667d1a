"""The OpenAPI document of the API listener, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from budget_guard import __version__

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "code", "message"],
            "properties": {
                "type": {"type": "string"},
                "code": {"type": "string"},
                "message": {"type": "string"},
            },
        }
    },
}

_TOKENS = {"type": "integer", "minimum": 0}

_USAGE_REPORT = {
    "type": "object",
    "required": ["request_id"],
    "properties": {
        "request_id": {"type": "string", "description": "x-budget-request-id of the check"},
        "model": {"type": "string", "description": "the model that served the call"},
        "usage": {
            "type": "object",
            "description": "OpenAI, Anthropic or Gemini usage object, as the API returned it",
            "properties": {
                "prompt_tokens": _TOKENS,
                "completion_tokens": _TOKENS,
                "prompt_tokens_details": {
                    "type": "object",
                    "properties": {"cached_tokens": _TOKENS},
                },
                "input_tokens": _TOKENS,
                "output_tokens": _TOKENS,
                "input_tokens_details": {
                    "type": "object",
                    "properties": {"cached_tokens": _TOKENS},
                },
                "cache_read_input_tokens": _TOKENS,
                "cache_creation_input_tokens": _TOKENS,
                "usageMetadata": {"type": "object"},
            },
        },
        "usageMetadata": {"type": "object", "description": "Gemini usage, beside usage"},
        "cost_usd": {
            "type": ["string", "number"],
            "description": "the call's cost, instead of usage",
        },
    },
}

_SETTLED = {
    "type": "object",
    "required": ["request_id", "status"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": [
                "settled",
                "already_settled",
                "accepted",
                "unknown_request_id",
                "ledger_unavailable",
                "lost",
            ],
        },
        "charged_usd": {"type": "string"},
        "reserved_usd": {"type": "string"},
        "message": {"type": "string"},
    },
}


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
            "schemas": {"Error": _ERROR, "UsageReport": _USAGE_REPORT, "Settled": _SETTLED},
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
                                        {"$ref": "#/components/schemas/UsageReport"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/UsageReport"},
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
                            {"$ref": "#/components/schemas/Settled"},
                        ),
                        "202": _json_response(
                            "recorded; settled once the ledger is back",
                            {"$ref": "#/components/schemas/Settled"},
                        ),
                        "400": _json_response(
                            "a malformed report; the message names the field",
                            {"$ref": "#/components/schemas/Error"},
                        ),
                        "401": _json_response(
                            "no or wrong bearer token", {"$ref": "#/components/schemas/Error"}
                        ),
                        "404": _json_response(
                            "no reservation for the request id",
                            {"$ref": "#/components/schemas/Settled"},
                        ),
                        "503": _json_response(
                            "the ledger cannot be reached; retry",
                            {"$ref": "#/components/schemas/Settled"},
                        ),
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
                    "summary": "A config is loaded and the ledger answers",
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
