"""The eight conformance cases of ../shared/ENVOY_EXT_AUTHZ.md §6, through a real HTTP
client against the running webhook and a real redis-server."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from budget_guard.localservices import RedisServer
from tests.fixtures.webhook import AGENT, budget, start_webhook

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
BUDGETS = [budget("acme", "100", tenant="acme"), budget("tiny", "0.000001", tenant="broke")]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


async def test_1_any_method_and_any_path_is_a_check_and_host_is_ignored(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, BUDGETS, listen={"path_prefix": "/check"}
    ) as wh:
        for method in METHODS:
            for path in (
                "/v1/chat/completions",
                "/check/v1/chat/completions?x=1&y=%20z",
                "/",
                "/check",
                "/anything/at/all?q",
            ):
                response = await wh.check(
                    headers={**AGENT, "host": "api.openai.com"}, method=method, path=path
                )
                assert response.status == 200, (method, path)
                assert response.headers["x-budget-request-id"]
        broke = {"x-budget-tenant": "broke", "host": "evil.example"}
        denied = await wh.check(CHAT, headers=broke, path="/check/v1/chat/completions?stream=1")
        assert denied.status == 429


async def test_2_content_length_zero_and_no_body(tmp_path: Path, redis_server: RedisServer) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        response = await wh.check(data=b"", headers={**AGENT, "content-length": "0"})
        assert response.status == 200
        assert response.headers["x-budget-estimated-cost-usd"] == "0.00"
        get = await wh.check(method="GET", path="/v1/models")
        assert get.status == 200


async def test_3_forwarded_bodies_exact_partial_non_utf8_and_gzip(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        exact = json.dumps(CHAT).encode()
        whole = await wh.check(
            data=exact,
            headers={
                **AGENT,
                "content-type": "application/json",
                "x-envoy-auth-partial-body": "false",
            },
        )
        assert whole.status == 200
        assert whole.headers["x-budget-estimator"].startswith("tiktoken:")

        cut = exact[: len(exact) // 2]  # Envoy cut it at max_request_bytes
        partial = await wh.check(
            data=cut,
            headers={
                **AGENT,
                "content-type": "application/json",
                "x-envoy-auth-partial-body": "true",
            },
        )
        assert partial.status == 200
        assert partial.headers["x-budget-estimator"] == "heuristic:bytes/4"

        latin1 = json.dumps({"model": "gpt-4o-mini", "prompt": "caf\u00e9"}).encode("latin-1")
        odd = await wh.check(
            data=latin1 + b"\xff\xfe", headers={**AGENT, "content-type": "application/json"}
        )
        assert odd.status in (200, 400)  # readable with replacement, or a clear 400
        assert odd.status != 500
        invalid_utf8 = b'{"model": "gpt-4o-mini", "prompt": "\xc3\x28 broken"}'
        replaced = await wh.check(
            data=invalid_utf8, headers={**AGENT, "content-type": "application/json"}
        )
        assert replaced.status == 200

        zipped = gzip.compress(exact)
        gz = await wh.check(
            data=zipped,
            headers={**AGENT, "content-type": "application/json", "content-encoding": "gzip"},
        )
        assert gz.status == 200
        assert gz.headers["x-budget-estimator"].startswith("tiktoken:")
        assert (
            gz.headers["x-budget-estimated-cost-usd"]
            == whole.headers["x-budget-estimated-cost-usd"]
        )

        garbage_gzip = b"\x1f\x8b" + b"\x00" * 40
        broken = await wh.check(
            data=garbage_gzip,
            headers={**AGENT, "content-type": "application/json", "x-budget-model": "gpt-4o-mini"},
        )
        assert broken.status == 200
        assert broken.headers["x-budget-estimator"] == "heuristic:bytes/4"


async def test_4_allow_is_exactly_200_and_every_deny_is_a_json_4xx(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        allowed = await wh.check(CHAT)
        assert allowed.status == 200
        denials = [
            await wh.check(CHAT, headers={"x-budget-tenant": "broke"}),  # 429 budget
            await wh.check(CHAT, headers={}),  # 401 no identity
            await wh.check(
                data=b'{"model": "gpt-4o", "messages": [',
                headers={**AGENT, "content-type": "application/json"},
            ),  # 400
            await wh.check({"model": "no-such-model", "prompt": "x"}),  # 403 unknown model
            await wh.check(
                data=b"x" * (1024 * 1024 + 10),
                headers={**AGENT, "content-type": "application/json"},
            ),  # 413
        ]
        assert [d.status for d in denials] == [429, 401, 400, 403, 413]
        for denial in denials:
            assert denial.headers["content-type"].startswith("application/json")
            error = denial.error
            assert error["message"] and error["code"] and error["type"]
        assert int(denials[0].headers["retry-after"]) > 0


async def test_5_headers_for_the_upstream_on_allow(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, BUDGETS, strip_headers=("x-budget-tenant", "x-budget-user")
    ) as wh:
        response = await wh.check(CHAT, headers={**AGENT, "x-request-id": "req-123"})
        assert response.status == 200
        headers = response.headers
        assert headers["x-budget-request-id"] == "req-123"
        assert float(headers["x-budget-estimated-cost-usd"]) > 0
        assert float(headers["x-budget-remaining-usd"]) < 100
        assert headers["x-envoy-auth-headers-to-remove"] == (
            "x-budget-tenant,x-budget-user,x-budget-model-override"  # only the guard's override
        )
        for name in ("x-budget-request-id", "x-budget-estimator"):
            assert len(headers.getall(name)) == 1  # single-valued for Envoy to overwrite


async def test_6_never_a_5xx_for_a_decision(tmp_path: Path) -> None:
    with RedisServer() as redis:
        budgets = [
            budget("open", "100", tenant="acme"),
            budget("closed", "100", tenant="strict", failureMode="Closed"),
        ]
        # Per-request decisions: with leases, requests within them need no Redis at all.
        async with start_webhook(
            tmp_path, redis.url, budgets, timeout_ms=100, local_leases=False
        ) as wh:
            assert (await wh.check(CHAT)).status == 200
            redis.stop_process()
            degraded = await wh.check(CHAT)
            assert degraded.status == 200
            assert degraded.headers["x-budget-degraded"] == "ledger-unavailable"
            closed = await wh.check(CHAT, headers={"x-budget-tenant": "strict"})
            assert closed.status == 503  # the deliberate, clear fail-closed answer
            assert closed.error["code"] == "budget_unavailable"
            assert closed.headers["content-type"].startswith("application/json")


async def test_7_repeated_headers_head_and_header_limits(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        joined = await wh.check(CHAT, headers={**AGENT, "x-budget-user": "alice, mallory"})
        assert joined.status == 401
        assert "several values" in joined.error["message"]
        repeated_other = await wh.check(CHAT, headers={**AGENT, "accept": "a/b, c/d, e/f"})
        assert repeated_other.status == 200
        head = await wh.check(method="HEAD")
        assert head.status == 200
        big_ok = await wh.check(CHAT, headers={**AGENT, "x-large": "v" * 12_000})
        assert big_ok.status == 200
        too_big = await wh.check(CHAT, headers={**AGENT, "x-large": "v" * 20_000})
        assert 400 <= too_big.status < 500  # over --max-header-bytes: a deny, never a 5xx


async def _requests_on_one_connection(port: int, count: int) -> list[int]:
    """``count`` HTTP/1.1 requests, one after another, on a single TCP connection."""
    body = json.dumps(CHAT).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in AGENT.items())
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\n{head}"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for _ in range(count):
            writer.write(request)
            status_line = await reader.readline()
            statuses.append(int(status_line.split()[1]))
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                assert name.lower() != "connection" or "close" not in value.lower()
            await reader.readexactly(length)
    finally:
        writer.close()
    return statuses


async def test_8_keep_alive_under_load(tmp_path: Path, redis_server: RedisServer) -> None:
    # Latency under load is measured by make bench (docs/benchmarks.md), not asserted here.
    async with start_webhook(tmp_path, redis_server.url, BUDGETS) as wh:
        port = int(wh.check_url.rsplit(":", 1)[1])
        results = await asyncio.gather(*(_requests_on_one_connection(port, 50) for _ in range(8)))
        assert list(results) == [[200] * 50] * 8
