"""Every deny in the words of the API the client speaks, so its SDK reads it right.

A check's deny is built once, OpenAI-shaped (``responses.py``); here it is given the
shape and headers of the client's API (``domain.endpoints.api_of`` its path):

- **OpenAI** (and compatibles): ``{"error": {"message", "type", "param": null,
  "code", ...}}``; the openai SDK raises ``RateLimitError`` on a 429 and fills
  ``code``, ``param`` and ``type`` from it.
- **Anthropic** (``/v1/messages``): ``{"type": "error", "error": {"type":
  "rate_limit_error", "message", ...}}`` and ``request-id``, which the anthropic SDK
  exposes as the error's ``request_id``.
- **Gemini**: Google's error, ``{"error": {"code": 429, "message", "status":
  "RESOURCE_EXHAUSTED", "details": [ErrorInfo]}}``.

Every deny also says whether to retry (``x-should-retry``, read by the openai and
anthropic SDKs, which otherwise retry a 429 on their own: a spent budget does not come
back in a second) and echoes the request id as ``x-request-id``.
"""

from __future__ import annotations

import json
from typing import Any

from budget_guard.domain.endpoints import Api
from budget_guard.webhook.responses import HEADER_REQUEST_ID, JSON, CheckAnswer

# Denies worth retrying soon: the decision was not made (overload, no config) or the
# ledger is away for a moment. A spent budget, a bad request or a missing identity is not.
_RETRYABLE = frozenset({"overloaded", "budget_unavailable", "config_unavailable"})

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def for_client(answer: CheckAnswer, api: Api) -> CheckAnswer:
    """``answer`` as the client's SDK expects it; an allow is returned as it is."""
    if answer.status == 200:
        return answer
    error = _error_of(answer.body)
    headers = dict(answer.headers)
    headers.setdefault("x-should-retry", "true" if answer.reason in _RETRYABLE else "false")
    request_id = headers.get(HEADER_REQUEST_ID)
    if request_id:
        headers["x-request-id"] = request_id
    if api is Api.ANTHROPIC:
        body = _anthropic(answer.status, error)
        if request_id:
            headers["request-id"] = request_id
    elif api is Api.GEMINI:
        body = _google(answer.status, error)
    else:
        body = {"error": {**error, "param": None}}
    headers["content-type"] = JSON
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return answer._replace(headers=headers, body=encoded)


def _error_of(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"message": body.decode("utf-8", "replace")}
    error = document.get("error") if isinstance(document, dict) else None
    return dict(error) if isinstance(error, dict) else {}


def _anthropic(status: int, error: dict[str, Any]) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    details = {key: value for key, value in error.items() if key not in ("type", "message")}
    message = error.get("message", "")
    return {"type": "error", "error": {"type": kind, "message": message, **details}}


def _google(status: int, error: dict[str, Any]) -> dict[str, Any]:
    reason = str(error.get("code") or error.get("type") or "error").upper()
    metadata = {
        key: str(value)
        for key, value in error.items()
        if key not in ("type", "code", "message") and value is not None
    }
    return {
        "error": {
            "code": status,
            "message": error.get("message", ""),
            "status": _GOOGLE_STATUSES.get(status, "UNKNOWN"),
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "budgetguard.io",
                    "metadata": metadata,
                }
            ],
        }
    }
