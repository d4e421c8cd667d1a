"""Logs never contain prompts, completions or tokens.

A real webhook process logging at DEBUG, with every allowed request logged, takes a
full round through every listener: HTTP checks (allowed, denied, malformed, not JSON,
refused at the door), gRPC ext_authz, the ext_proc settlement of a streamed answer, and
the API port (``POST /v1/check``, ``POST /v1/usage``, the read APIs, with right and
wrong tokens). Each prompt, completion and token carries a unique marker; none may
appear in the webhook's log. A second process in ``--identity jwt`` mode does the same
with bearer JWTs, good and malformed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from budget_guard.localservices import RedisServer, WebhookProcess
from budget_guard.localservices.processes import free_port
from tests.fixtures.envoy_driver import EnvoyDriver, exchange
from tests.fixtures.provider_answers import OPENAI_USAGE, sse
from tests.fixtures.webhook import AGENT, budget, write_budgets
from tests.waiting import eventually

pytestmark = pytest.mark.redis

BUDGETS = [budget("acme", "1000", tenant="acme"), budget("broke", "0.000001", tenant="broke")]
BROKE = {"x-budget-tenant": "broke", "x-budget-user": "u"}


class Markers:
    """Unique strings for every secret of one run; ``seen_in`` lists those a text holds."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, kind: str) -> str:
        marker = f"{kind}-{uuid.uuid4().hex[:16]}"
        self.names[marker] = kind
        return marker

    def seen_in(self, text: str) -> list[str]:
        return [marker for marker in self.names if marker in text]


@pytest.fixture
def markers() -> Markers:
    return Markers()


def _chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}], **extra}


def _stream(completion: str) -> str:
    """An OpenAI chat stream that says ``completion``, with its usage."""
    parts = [completion[: len(completion) // 2], completion[len(completion) // 2 :]]
    chunks: list[Any] = [
        {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": part}}]}
        for part in parts
    ]
    chunks.append({"id": "c1", "choices": [], "usage": OPENAI_USAGE})
    chunks.append("[DONE]")
    return sse(*chunks)


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
    return received


@pytest.fixture
def webhook_args(tmp_path: Path, markers: Markers) -> Iterator[tuple[list[str], str]]:
    """Arguments of a webhook on its own redis-server, and its usage token."""
    usage_token = markers("usage-token")
    (tmp_path / "usage-token").write_text(usage_token + "\n")
    budgets = write_budgets(tmp_path / "budgets", BUDGETS)
    with RedisServer(workdir=tmp_path / "redis") as redis:
        yield (
            [
                *("--budgets", str(budgets), "--redis-url", redis.url),
                *("--usage-token-file", str(tmp_path / "usage-token")),
                *("--log-level", "DEBUG", "--log-allowed", "true"),
                *("--ledger-timeout-ms", "250", "--gateway-timeout-ms", "1000"),
                *("--max-inflight-decisions", "64"),
            ],
            usage_token,
        )


async def test_a_full_round_through_every_listener_logs_no_secret(
    tmp_path: Path,
    webhook_args: tuple[list[str], str],
    markers: Markers,
    envoy_driver: EnvoyDriver,
) -> None:
    args, usage_token = webhook_args
    args = [*args, "--ext-proc-port", str(free_port())]
    provider_key = {"authorization": f"Bearer {markers('provider-key')}"}
    usage = {"authorization": f"Bearer {usage_token}"}
    with WebhookProcess(args, workdir=tmp_path / "webhook") as webhook:
        check = webhook.check_url
        api = webhook.api_url
        async with aiohttp.ClientSession() as session:

            async def post(url: str, body: Any, **headers: str) -> int:
                async with session.post(url, json=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status

            async def get(url: str, **headers: str) -> int:
                async with session.get(url, headers=headers) as answer:
                    await answer.read()
                    return answer.status

            # the check port: allowed, denied, malformed JSON, not JSON, unknown model
            chat_url = check + "/v1/chat/completions"
            ids = [f"allowed-{n}" for n in range(3)]
            for request_id in ids:
                headers = {**AGENT, **provider_key, "x-request-id": request_id}
                assert await post(chat_url, _chat(markers("prompt")), **headers) == 200
            assert await post(chat_url, _chat(markers("prompt")), **BROKE, **provider_key) == 429
            broken = f'{{"model": "gpt-4o", "messages": [{{"content": "{markers("prompt")}"'
            async with session.post(
                chat_url, data=broken, headers={**AGENT, "content-type": "application/json"}
            ) as answer:
                assert answer.status == 400
            async with session.post(
                chat_url, data=f"audio {markers('prompt')}", headers={**AGENT, **provider_key}
            ) as answer:
                assert answer.status in (200, 400)
            unknown = {"model": markers("model-name-is-not-secret"), "prompt": markers("prompt")}
            assert await post(chat_url, unknown, **AGENT) == 403
            # a request aiohttp cannot parse, with a prompt and a token in its bytes
            garbage = (
                f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                f"authorization: Bearer {markers('provider-key')}\r\nbad header line\r\n"
                f"content-length: 5\r\n\r\n{markers('prompt')}"
            ).encode()
            _raw(webhook.check_port, garbage)  # a 400, or the connection closed
            pipelined = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                "x-budget-tenant: acme\r\ncontent-length: 2\r\n\r\n{}"
                f'{{"prompt": "{markers("prompt")}"}}'
            ).encode()
            _raw(webhook.check_port, pipelined)

            # gRPC ext_authz
            grpc_check = {
                "name": "grpc-1",
                "method": "POST",
                "path": "/v1/chat/completions",
                "headers": [[k, v] for k, v in {**AGENT, **provider_key}.items()],
                "with_request_body": {"max_request_bytes": 1 << 20, "allow_partial_message": True},
                "body": json.dumps(_chat(markers("prompt"))),
            }
            target = f"127.0.0.1:{webhook.ext_proc_port}"
            (checked,) = (await envoy_driver.ext_authz(target, [grpc_check])).checks
            assert checked.summary is not None and checked.summary.allowed

            # ext_proc: the gateway settles a streamed answer
            streamed_id = "streamed-1"
            request = _chat(markers("prompt"), stream=True)
            headers = {**AGENT, **provider_key, "x-request-id": streamed_id}
            assert await post(chat_url, request, **headers) == 200
            report = await envoy_driver.ext_proc(
                target,
                [
                    exchange(
                        streamed_id,
                        request_body=request,
                        request_headers={
                            **AGENT,
                            **provider_key,
                            "x-budget-request-id": streamed_id,
                        },
                        path="/v1/chat/completions",
                        response_body=_stream(markers("completion")),
                        response_headers={"content-type": "text/event-stream"},
                    )
                ],
            )
            assert report.exchanges[0].errors == []

            # the API port: a check, settlements, reads; right and wrong tokens
            call = {"headers": AGENT, "body": _chat(markers("prompt"))}
            assert await post(api + "/v1/check", call, **usage) == 200
            wrong = {"authorization": f"Bearer {markers('wrong-usage-token')}"}
            assert await post(api + "/v1/check", call, **wrong) == 401
            reports = [{"request_id": rid, "model": "gpt-4o", "usage": OPENAI_USAGE} for rid in ids]
            assert await post(api + "/v1/usage", reports, **usage) == 200
            assert await post(api + "/v1/usage", reports[0], **wrong) == 401
            bad_report = {"request_id": "allowed-0", "cost_usd": markers("prompt")}
            assert await post(api + "/v1/usage", bad_report, **usage) == 400
            for path in ("/v1/budgets", "/v1/spend?from=2026-01&to=2026-12", "/readyz", "/metrics"):
                await get(api + path, **usage)
                await get(api + path, **wrong)

            async def settled_by_ext_proc() -> bool:
                async with session.get(api + "/metrics") as answer:
                    text = await answer.text()
                return 'source="ext_proc",status="settled"} 1.0' in text

            await eventually(settled_by_ext_proc, what="the ext_proc settlement")
        assert webhook.stop() == 0
    log = webhook.log_path.read_text(errors="replace")
    assert '"level": "debug"' in log  # the round was logged at its most talkative
    assert "allowed-0" in log  # allowed requests were logged (by id)
    secrets = [m for m in markers.seen_in(log) if markers.names[m] != "model-name-is-not-secret"]
    assert secrets == [], [line for line in log.splitlines() if any(s in line for s in secrets)]


def _jwt(key: Any, claims: dict[str, Any]) -> str:
    now = int(time.time())
    payload = {"iss": "https://login.example.com/", "aud": "llm-gateway", "iat": now}
    payload |= {"exp": now + 600, "sub": "alice", "tenant": "acme", **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


async def test_bearer_jwts_good_and_bad_stay_out_of_the_log(
    tmp_path: Path, webhook_args: tuple[list[str], str], markers: Markers
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    args, _ = webhook_args
    args = [
        *args,
        *("--identity", "jwt", "--jwt-jwks-file", str(tmp_path / "jwks.json")),
        *("--jwt-issuer", "https://login.example.com/", "--jwt-audience", "llm-gateway"),
    ]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        "good": _jwt(key, {"marker": markers("jwt")}),
        "expired": _jwt(key, {"marker": markers("jwt"), "exp": int(time.time()) - 60}),
        "wrong key": _jwt(other_key, {"marker": markers("jwt")}),
        "not a JWT": markers("jwt"),
        "bad header": f"{markers('jwt')}.e30.c2ln",
        "bad payload": "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0." + markers("jwt") + ".c2ln",
    }
    with WebhookProcess(args, workdir=tmp_path / "webhook") as webhook:
        async with aiohttp.ClientSession() as session:
            for name, token in tokens.items():
                async with session.post(
                    webhook.check_url + "/v1/chat/completions",
                    json=_chat(markers("prompt")),
                    headers={"authorization": f"Bearer {token}"},
                ) as answer:
                    assert answer.status == (200 if name == "good" else 401), name
        assert webhook.stop() == 0
    log = webhook.log_path.read_text(errors="replace")
    for token in tokens.values():
        for part in token.split("."):
            assert part not in log or len(part) < 8, part
    assert markers.seen_in(log) == []
