"""Denies in each API's words: the status stays, the shape and retry advice follow the API."""

from __future__ import annotations

import json

import pytest

from budget_guard.domain.endpoints import Api
from budget_guard.webhook.dialects import for_client
from budget_guard.webhook.responses import error_answer, free_answer, overloaded_answer


def test_an_allow_is_left_as_it_is() -> None:
    allow = free_answer("r-1", ())
    assert for_client(allow, Api.ANTHROPIC) is allow


@pytest.mark.parametrize(
    ("status", "code", "anthropic_type", "google_status", "retry"),
    [
        (400, "missing_model", "invalid_request_error", "INVALID_ARGUMENT", "false"),
        (401, "missing_identity", "authentication_error", "UNAUTHENTICATED", "false"),
        (413, "body_too_large", "request_too_large", "INVALID_ARGUMENT", "false"),
        (503, "config_unavailable", "api_error", "UNAVAILABLE", "true"),
    ],
)
def test_each_error_in_each_api(
    status: int, code: str, anthropic_type: str, google_status: str, retry: str
) -> None:
    answer = error_answer(status, code, "what to fix", "r-9")
    openai = for_client(answer, Api.OPENAI)
    assert openai.status == status
    assert json.loads(openai.body)["error"] == {
        "type": code,
        "code": code,
        "message": "what to fix",
        "request_id": "r-9",
        "param": None,
    }
    assert openai.headers["x-should-retry"] == retry
    assert openai.headers["x-request-id"] == "r-9"

    anthropic = for_client(answer, Api.ANTHROPIC)
    body = json.loads(anthropic.body)
    assert body["type"] == "error"
    assert body["error"]["type"] == anthropic_type and body["error"]["code"] == code
    assert anthropic.headers["request-id"] == "r-9"

    google = json.loads(for_client(answer, Api.GEMINI).body)["error"]
    assert (google["code"], google["status"]) == (status, google_status)
    assert google["details"][0]["reason"] == code.upper()


def test_overload_keeps_its_own_advice_to_retry() -> None:
    answer = for_client(overloaded_answer("r-2", "too many checks in flight"), Api.ANTHROPIC)
    assert answer.status == 429 and answer.headers["x-should-retry"] == "true"
    assert json.loads(answer.body)["error"]["type"] == "rate_limit_error"
