"""One call through the gateway's ext_proc, phase by phase, with no gRPC and no Redis:
which calls are ours, what the request becomes, and what is settled at the end."""

from __future__ import annotations

import json

import pytest

from budget_guard.domain.manifest import parse_manifests
from budget_guard.domain.pricing import Usage, default_price_table
from budget_guard.domain.tokens import RequestEstimator
from budget_guard.loaders.tokenizers import load_tokenizers
from budget_guard.webhook.active_config import ConfigHolder, compile_config
from budget_guard.webhook.gateway import CallEnd, GatewayCall, GatewayTools, HeaderEdits, Settled
from tests.fixtures.provider_answers import CHAT_REQUEST, PROVIDERS


@pytest.fixture(scope="module")
def tools() -> GatewayTools:
    config = ConfigHolder()
    config.install(compile_config(parse_manifests([]), default_price_table(), "v1", "test"))
    estimator = RequestEstimator(load_tokenizers(["cl100k_base"]).tokenizers)
    return GatewayTools(config, estimator, max_body_bytes=1 << 20)


def headers(path: str = "/v1/chat/completions", **extra: str) -> dict[str, str]:
    return {":method": "POST", ":path": path, "x-budget-request-id": "r-1", **extra}


def answer(
    call: GatewayCall, status: int, body: object, content_type: str = "application/json"
) -> CallEnd | None:
    call.on_response_headers({":status": str(status), "content-type": content_type}, end=False)
    call.on_response_body(json.dumps(body).encode(), end=True)
    return call.end()


def test_a_call_without_a_request_id_or_on_a_free_path_is_not_ours(tools: GatewayTools) -> None:
    for request_headers in (
        {":method": "POST", ":path": "/v1/chat/completions"},
        headers("/v1/messages/count_tokens"),
        {**headers("/v1/models"), ":method": "GET"},
    ):
        call = GatewayCall(tools)
        assert call.on_request_headers(request_headers) == HeaderEdits()
        assert call.on_request_body(json.dumps(CHAT_REQUEST).encode(), end=True) is None
        assert answer(call, 200, PROVIDERS["openai-chat"]["plain"]) is None
        assert not call.priced


def test_the_downgrade_rewrites_the_body_and_its_length(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    call.on_request_headers(headers(**{"x-budget-model-override": "gpt-4o-mini"}))
    edit = call.on_request_body(json.dumps(CHAT_REQUEST).encode(), end=True)
    assert edit is not None
    assert json.loads(edit.body) == {**CHAT_REQUEST, "model": "gpt-4o-mini"}
    assert edit.headers.set == (("content-length", str(len(edit.body))),)
    ended = answer(call, 200, PROVIDERS["openai-chat"]["plain"])
    assert ended is not None and ended.model == "gpt-4o-mini"
    assert ended.settled is Settled.REPORTED


def test_a_gemini_downgrade_rewrites_the_path(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    edits = call.on_request_headers(
        headers(path, **{"x-budget-model-override": "gemini-2.5-flash-lite"})
    )
    assert edits.set == (
        (":path", "/v1beta/models/gemini-2.5-flash-lite:streamGenerateContent?alt=sse"),
    )
    ended = answer(call, 200, PROVIDERS["gemini"]["plain"])
    assert ended is not None and ended.model == "gemini-2.5-flash-lite"


def test_an_unchanged_body_is_left_alone(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    call.on_request_headers(headers("/v1/responses"))
    streamed = {"model": "gpt-4o", "input": "hi", "stream": True}  # Responses: usage comes anyway
    assert call.on_request_body(json.dumps(streamed).encode(), end=True) is None


def test_an_upstream_error_releases_unless_it_reported_usage(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    call.on_request_headers(headers())
    call.on_request_body(json.dumps(CHAT_REQUEST).encode(), end=True)
    ended = answer(call, 503, {"error": {"message": "overloaded"}})
    assert ended is not None and ended.settled is Settled.RELEASED and ended.usage == Usage()

    call = GatewayCall(tools)
    call.on_request_headers(headers())
    call.on_request_body(json.dumps(CHAT_REQUEST).encode(), end=True)
    ended = answer(call, 400, {"error": {}, "usage": {"prompt_tokens": 5, "completion_tokens": 0}})
    assert ended is not None and ended.settled is Settled.REPORTED
    assert ended.usage == Usage(input_tokens=5)


def test_a_call_is_settled_once(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    call.on_request_headers(headers())
    call.on_request_body(json.dumps(CHAT_REQUEST).encode(), end=True)
    assert answer(call, 200, PROVIDERS["openai-chat"]["plain"]) is not None
    assert call.end() is None


def test_a_call_cut_before_any_answer_charges_the_estimated_input(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    call.on_request_headers(headers())
    call.on_request_body(json.dumps(CHAT_REQUEST).encode(), end=True)
    ended = call.end()
    assert ended is not None and ended.early and ended.settled is Settled.SEEN
    assert ended.usage.input_tokens > 0 and ended.usage.output_tokens == 0


def test_an_unpriced_model_is_a_problem_not_a_guess(tools: GatewayTools) -> None:
    call = GatewayCall(tools)
    call.on_request_headers(headers())
    call.on_request_body(json.dumps({**CHAT_REQUEST, "model": "my-own-llm"}).encode(), end=True)
    assert answer(call, 200, {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}) is None
    assert call.problems == ["model 'my-own-llm' has no price"]
