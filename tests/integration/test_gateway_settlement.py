"""The gateway closes the loop: ext_proc settles each call from the provider's answer.

Envoy's part is played by envoy-driver (Go, Envoy's own generated API), the ledger is
a real redis-server. Every call is first decided by the HTTP check, exactly as Envoy's
ext_authz would, and the driver then replays the call through ext_proc with the
request id ext_authz gave it. Answers are cut at random points (inside SSE lines, JSON
documents and UTF-8 sequences) by the driver.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from budget_guard.domain.money import format_usd
from budget_guard.localservices import RedisServer
from tests.fixtures.envoy_driver import EnvoyDriver, Exchange, exchange, header
from tests.fixtures.provider_answers import (
    ANTHROPIC_COST,
    ANTHROPIC_INPUT_COST,
    CHAT_REQUEST,
    OPENAI_COST,
    PER_MILLION,
    PROVIDERS,
    TEXT,
    anthropic_stream,
    openai_chat_stream,
)
from tests.fixtures.webhook import AGENT, RunningWebhook, budget, start_webhook
from tests.waiting import eventually

pytestmark = pytest.mark.redis

BUDGETS = [budget("acme", "10", tenant="acme")]
SPLITS = ({"chunks": 8}, {"max_chunk_bytes": 1}, {"max_chunk_bytes": 17})
JSON = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}


@pytest.fixture
async def wh(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[RunningWebhook]:
    """A webhook enforcing BUDGETS, its ext_proc listener on."""
    async with start_webhook(tmp_path, redis_server.url, BUDGETS, ext_proc=True) as running:
        yield running


def after_each_event(stream: str) -> list[int]:
    """Cut offsets that deliver a stream one whole event per chunk."""
    ends, at = [], 0
    for event in stream.split("\n\n")[:-1]:
        at += len(event.encode()) + 2
        ends.append(at)
    return ends[:-1]


def estimated_input(wh: RunningWebhook, request: Mapping[str, Any], model: str) -> int:
    """The request's input tokens as the check estimated them."""
    price = wh.parts.config.current.prices.price(model).price  # type: ignore[union-attr]
    return wh.parts.gateway.estimator.estimate(request, price).input_tokens


def counted_output(wh: RunningWebhook, text: str, model: str) -> int:
    price = wh.parts.config.current.prices.price(model).price  # type: ignore[union-attr]
    return wh.parts.gateway.estimator.count_text(text, price)


def ceil_micros(tokens_times_prices: int) -> int:
    """Micro-USD of tokens x micro-USD per million tokens, rounded up as the ledger does."""
    return -(-tokens_times_prices // PER_MILLION)


async def spent(wh: RunningWebhook) -> dict[str, str]:
    (acme,) = (await wh.api("/v1/budgets")).json()["budgets"]
    return {key: acme[key] for key in ("spentUsd", "reservedUsd")}


def settlements(wh: RunningWebhook, source: str = "ext_proc", status: str = "settled") -> float:
    registry = wh.parts.api.metrics.registry
    labels = {"source": source, "status": status}
    return registry.get_sample_value("budget_guard_settlements_total", labels) or 0.0


def metric(wh: RunningWebhook, name: str, **labels: str) -> float:
    return wh.parts.api.metrics.registry.get_sample_value(name, labels) or 0.0


async def reserve(
    wh: RunningWebhook, request_id: str, body: Mapping[str, Any], path: str
) -> dict[str, str]:
    """The check Envoy's ext_authz makes first; returns the headers it adds upstream."""
    headers = {**AGENT, "x-request-id": request_id, "content-type": "application/json"}
    answer = await wh.check(headers=headers, path=path, data=json.dumps(body).encode())
    assert answer.status == 200, answer.body
    return {name: value for name, value in answer.headers.items() if name.startswith("x-budget-")}


async def through_gateway(
    wh: RunningWebhook,
    driver: EnvoyDriver,
    request_id: str,
    body: Mapping[str, Any],
    path: str,
    *,
    seed: int = 1,
    **answer: Any,
) -> Exchange:
    added = await reserve(wh, request_id, body, path)
    report = await driver.ext_proc(
        wh.ext_proc_target,
        [
            exchange(
                request_id,
                request_body=dict(body),
                request_headers={**AGENT, **added},
                path=path,
                **answer,
            )
        ],
        seed=seed,
    )
    (done,) = report.exchanges
    assert done.errors == [] and done.warnings == [], (done.errors, done.warnings)
    return done


async def shape_through_gateway(
    wh: RunningWebhook,
    driver: EnvoyDriver,
    request_id: str,
    shape: Mapping[str, Any],
    **answer: Any,
) -> Exchange:
    """The provider ``shape``'s request through the gateway, answered (unless ``answer``
    says otherwise) with its whole JSON answer."""
    answer = {"response_body": shape["plain"], "response_headers": JSON, **answer}
    return await through_gateway(wh, driver, request_id, shape["request"], shape["path"], **answer)


async def charged(wh: RunningWebhook, settled_before: float = 0) -> dict[str, str]:
    await eventually(lambda: settlements(wh) > settled_before, what="the ext_proc settlement")
    return await spent(wh)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("split", SPLITS, ids=lambda split: "-".join(map(str, split.items())))
async def test_a_streamed_answer_is_settled_to_the_micro_dollar(
    wh: RunningWebhook,
    envoy_driver: EnvoyDriver,
    provider: str,
    split: dict[str, int],
) -> None:
    shape = PROVIDERS[provider]
    body = dict(shape["request"])
    if provider != "gemini":
        body["stream"] = True
    if provider == "openai-chat":  # asked by the client: it gets the usage chunk too
        body["stream_options"] = {"include_usage": True}
    path = shape.get("stream_path", shape["path"])
    done = await through_gateway(
        wh,
        envoy_driver,
        "r-1",
        body,
        path,
        response_body=shape["stream"],
        split=split,
        response_headers={"content-type": "text/event-stream; charset=utf-8"},
    )
    assert done.client.body.text == shape["stream"]  # not a byte changed, not held back
    assert len(done.client.chunks) == len(done.response_chunk_sizes)
    assert await charged(wh) == {
        "spentUsd": format_usd(shape["cost"]),
        "reservedUsd": "0.00",
    }
    assert metric(wh, "budget_guard_usage_parse_failures_total", shape=provider.split("-")[0]) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_json_answer_is_settled_to_the_micro_dollar(
    wh: RunningWebhook, envoy_driver: EnvoyDriver, provider: str
) -> None:
    shape = PROVIDERS[provider]
    await shape_through_gateway(wh, envoy_driver, "r-1", shape, split={"max_chunk_bytes": 7})
    assert await charged(wh) == {
        "spentUsd": format_usd(shape["cost"]),
        "reservedUsd": "0.00",
    }


async def test_a_gzip_answer_is_inflated_and_read(
    wh: RunningWebhook, envoy_driver: EnvoyDriver
) -> None:
    shape = PROVIDERS["anthropic"]
    packed = gzip.compress(json.dumps(shape["plain"]).encode())
    done = await shape_through_gateway(
        wh,
        envoy_driver,
        "r-1",
        shape,
        response_body=packed,
        split={"max_chunk_bytes": 5},
        response_headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert done.client.body.data == packed
    assert (await charged(wh))["spentUsd"] == format_usd(ANTHROPIC_COST)


async def test_include_usage_is_asked_for_and_the_client_sees_only_what_it_asked(
    wh: RunningWebhook, envoy_driver: EnvoyDriver
) -> None:
    request = {**CHAT_REQUEST, "stream": True}
    provider_stream = openai_chat_stream(usage=True)
    without_usage = openai_chat_stream(usage=False)
    done = await through_gateway(
        wh,
        envoy_driver,
        "not-asked",
        request,
        "/v1/chat/completions",
        response_body=provider_stream,
        split={"max_chunk_bytes": 9},
        response_headers=SSE,
    )
    sent = json.loads(done.upstream.body.data)
    assert sent["stream_options"] == {"include_usage": True}
    assert header(done.upstream.headers, "content-length") == str(len(done.upstream.body.data))
    assert done.client.body.text == without_usage  # the usage chunk removed, nothing else
    assert (await charged(wh))["spentUsd"] == format_usd(OPENAI_COST)

    asked = {**request, "stream_options": {"include_usage": True}}
    again = await through_gateway(
        wh,
        envoy_driver,
        "asked",
        asked,
        "/v1/chat/completions",
        response_body=provider_stream,
        split={"max_chunk_bytes": 9},
        response_headers=SSE,
    )
    assert json.loads(again.upstream.body.data) == asked  # the body was left alone
    assert again.client.body.text == provider_stream


async def test_the_downgrade_sends_the_cheaper_model_and_prices_it(
    tmp_path: Path, redis_server: RedisServer, envoy_driver: EnvoyDriver
) -> None:
    # The first call's estimate (about $0.005) stays under 1 % of $0.80; with its
    # settled cost ($0.004) the second call's estimate crosses it.
    budgets = [
        budget(
            "acme",
            "0.80",
            tenant="acme",
            thresholds=[1],
            onSoftLimit={"degradeModels": {"gpt-4o": "gpt-4o-mini"}},
        ),
    ]
    plain = PROVIDERS["openai-chat"]["plain"]
    async with start_webhook(tmp_path, redis_server.url, budgets, ext_proc=True) as wh:
        first = await through_gateway(
            wh,
            envoy_driver,
            "first",
            CHAT_REQUEST,
            "/v1/chat/completions",
            response_body=plain,
            response_headers=JSON,
        )
        assert json.loads(first.upstream.body.data)["model"] == "gpt-4o"  # under 1 %: as asked
        await charged(wh)
        second = await through_gateway(
            wh,
            envoy_driver,
            "second",
            CHAT_REQUEST,
            "/v1/chat/completions",
            response_body=plain,
            response_headers=JSON,
        )
        sent = json.loads(second.upstream.body.data)
        assert sent == {**CHAT_REQUEST, "model": "gpt-4o-mini"}
        assert header(second.upstream.headers, "content-length") == str(
            len(second.upstream.body.data)
        )
        mini = (600 * 150_000 + 400 * 75_000 + 200 * 600_000) // PER_MILLION  # gpt-4o-mini
        assert (await charged(wh, 1))["spentUsd"] == format_usd(OPENAI_COST + mini)


async def test_a_stream_cut_in_the_middle_is_settled_once_from_what_was_seen(
    wh: RunningWebhook, envoy_driver: EnvoyDriver
) -> None:
    stream = openai_chat_stream()
    request = {**CHAT_REQUEST, "stream": True}
    done = await through_gateway(
        wh,
        envoy_driver,
        "cut",
        request,
        "/v1/chat/completions",
        response_body=stream,
        split={"cut_at": after_each_event(stream)},
        response_headers=SSE,
        interrupt={"by": "client", "after_response_chunks": 3},
    )
    assert done.stream.end == "cancelled"
    # The first three chunks (the first three texts) came by; the usage never did.
    input_tokens = estimated_input(wh, request, "gpt-4o")
    output_tokens = counted_output(wh, "".join(TEXT[:3]), "gpt-4o")
    expected = ceil_micros(input_tokens * 2_500_000 + output_tokens * 10_000_000)
    assert await charged(wh) == {"spentUsd": format_usd(expected), "reservedUsd": "0.00"}
    assert metric(wh, "budget_guard_ext_proc_streams_ended_early_total", shape="openai") == 1
    late = await wh.settle({"request_id": "cut", "cost_usd": "1"})
    assert late.json()["status"] == "already_settled"  # settled once, from what was seen
    assert (await spent(wh))["spentUsd"] == format_usd(expected)


async def test_ext_proc_and_the_usage_api_settle_an_id_once(
    wh: RunningWebhook, envoy_driver: EnvoyDriver
) -> None:
    shape = PROVIDERS["openai-chat"]
    await shape_through_gateway(wh, envoy_driver, "gateway-first", shape)
    await charged(wh)
    late = await wh.settle({"request_id": "gateway-first", "cost_usd": "0.5"})
    assert late.json()["status"] == "already_settled"

    await reserve(wh, "app-first", shape["request"], shape["path"])
    early = await wh.settle({"request_id": "app-first", "cost_usd": "0.001"})
    assert early.json()["status"] == "settled"
    report = await envoy_driver.ext_proc(
        wh.ext_proc_target,
        [
            exchange(
                "app-first",
                request_body=shape["request"],
                request_headers={**AGENT, "x-budget-request-id": "app-first"},
                response_body=shape["plain"],
                response_headers=JSON,
            )
        ],
    )
    assert report.exchanges[0].errors == []
    await eventually(lambda: settlements(wh, status="already_settled") == 1)
    total = OPENAI_COST + 1000
    assert await spent(wh) == {"spentUsd": format_usd(total), "reservedUsd": "0.00"}


@pytest.mark.parametrize("status", [429, 500])
async def test_an_upstream_error_releases_the_reservation(
    wh: RunningWebhook, envoy_driver: EnvoyDriver, status: int
) -> None:
    shape = PROVIDERS["anthropic"]
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    await shape_through_gateway(wh, envoy_driver, "r-1", shape, status=status, response_body=error)
    assert await charged(wh) == {"spentUsd": "0.00", "reservedUsd": "0.00"}


async def test_a_reset_before_any_answer_releases_and_a_reset_after_settles_what_was_seen(
    wh: RunningWebhook, envoy_driver: EnvoyDriver
) -> None:
    shape = PROVIDERS["anthropic"]
    done = await through_gateway(
        wh,
        envoy_driver,
        "no-answer",
        shape["request"],
        shape["path"],
        interrupt={"by": "upstream", "before_response_headers": True},
    )
    assert done.client.status == 503  # Envoy's own reply: an upstream error
    assert await charged(wh) == {"spentUsd": "0.00", "reservedUsd": "0.00"}

    stream = anthropic_stream()
    await through_gateway(
        wh,
        envoy_driver,
        "half",
        {**shape["request"], "stream": True},
        shape["path"],
        response_body=stream,
        split={"cut_at": after_each_event(stream)},
        response_headers=SSE,
        interrupt={"by": "upstream", "after_response_chunks": 4},
    )
    # message_start gave the input side: charged as the provider said it. The output
    # is counted over the two texts that went by before the reset.
    output_tokens = counted_output(wh, "".join(TEXT[:2]), "claude-sonnet-4-5")
    expected = ceil_micros(ANTHROPIC_INPUT_COST + output_tokens * 15_000_000)
    assert await charged(wh, 1) == {"spentUsd": format_usd(expected), "reservedUsd": "0.00"}


async def test_requests_ext_authz_did_not_price_pass_untouched(
    wh: RunningWebhook, envoy_driver: EnvoyDriver
) -> None:
    report = await envoy_driver.ext_proc(
        wh.ext_proc_target,
        [
            exchange(
                "models",
                method="GET",
                path="/v1/models",
                request_headers={"x-budget-request-id": "listing"},
                response_body={"data": [{"id": "gpt-4o"}]},
            ),
            exchange(
                "no-id",
                request_body=CHAT_REQUEST,
                response_body=PROVIDERS["openai-chat"]["plain"],
            ),
        ],
    )
    for done in report.exchanges:
        assert done.errors == [] and done.warnings == []
        assert done.client.status == 200
    assert settlements(wh) == 0


async def test_a_request_body_past_grpcs_default_message_size_goes_through(
    tmp_path: Path, redis_server: RedisServer, envoy_driver: EnvoyDriver
) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * (6 << 20)}}
    content = [{"type": "text", "text": "What is in this picture?"}, image]
    large = {**CHAT_REQUEST, "messages": [{"role": "user", "content": content}]}
    shape = PROVIDERS["openai-chat"]
    async with start_webhook(
        tmp_path, redis_server.url, BUDGETS, ext_proc=True, listen={"max_body_bytes": 8 << 20}
    ) as wh:
        done = await through_gateway(
            wh,
            envoy_driver,
            "large",
            large,
            shape["path"],
            response_body=shape["plain"],
            response_headers=JSON,
        )
        assert done.upstream.body.data == json.dumps(large, separators=(",", ":")).encode()
        assert (await charged(wh))["spentUsd"] == format_usd(OPENAI_COST)
