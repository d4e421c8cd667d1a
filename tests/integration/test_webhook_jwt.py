"""Identity from a bearer JWT the webhook verifies itself (RS256 / ES256, JWKS file or URL)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from budget_guard.localservices import RedisServer
from budget_guard.webhook.settings import IdentitySettings, JwtSettings
from tests.fixtures.webhook import budget, start_webhook

pytestmark = pytest.mark.redis

CHAT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
ISSUER, AUDIENCE = "https://login.example.com/", "llm-gateway"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
BUDGETS = [budget("acme", "0.000001", tenant="acme"), budget("globex", "100", tenant="globex")]


def jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return {"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1"}]}


def token(
    claims: dict[str, Any] | None = None,
    *,
    algorithm: str = "RS256",
    kid: str = "rsa-1",
    key: Any = None,
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant": "globex",
        "tier": "pro",
        "iat": now,
        "exp": now + 600,
        **(claims or {}),
    }
    payload = {name: value for name, value in payload.items() if value is not None}
    signing_key = key or (RSA_KEY if algorithm == "RS256" else EC_KEY)
    return jwt.encode(payload, signing_key, algorithm=algorithm, headers={"kid": kid})


def bearer(value: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}", **extra}


def identity_settings(**jwt_settings: Any) -> IdentitySettings:
    return IdentitySettings(
        mode="jwt", jwt=JwtSettings(issuer=ISSUER, audience=AUDIENCE, **jwt_settings)
    )


@pytest.fixture
async def jwks_url() -> AsyncIterator[str]:
    async def serve_jwks(_: web.Request) -> web.Response:
        return web.json_response(jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", serve_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/.well-known/jwks.json"
    await runner.cleanup()


async def test_claims_decide_identity_and_client_headers_are_ignored(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks()))
    settings = identity_settings(jwks_file=keys)
    async with start_webhook(
        tmp_path,
        redis_server.url,
        BUDGETS,
        identity=settings,
        strip_headers=settings.identity_headers,
    ) as wh:
        allowed = await wh.check(CHAT, headers=bearer(token(), **{"x-budget-tenant": "acme"}))
        assert allowed.status == 200  # the token says globex: the header cannot pick acme
        removed = allowed.headers["x-envoy-auth-headers-to-remove"].split(",")
        assert "x-budget-tenant" in removed and "x-budget-user" in removed
        acme = await wh.check(CHAT, headers=bearer(token({"tenant": "acme"})))
        assert acme.status == 429
        ec_token = token({"tenant": "acme"}, algorithm="ES256", kid="ec-1")
        assert (await wh.check(CHAT, headers=bearer(ec_token))).status == 429


@pytest.mark.parametrize(
    ("credentials", "problem"),
    [
        ({}, "send Authorization: Bearer <JWT>"),
        (bearer("not-a-jwt"), "invalid bearer token"),
        (bearer(token({"iss": "https://evil.example/"})), "Invalid issuer"),
        (bearer(token({"aud": "someone-else"})), "Audience doesn't match"),
        (bearer(token({"exp": int(time.time()) - 3600})), "Signature has expired"),
        (bearer(token(kid="who-knows")), "unknown signing key 'who-knows'"),
        (
            bearer(token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))),
            "Signature verification failed",
        ),
        (bearer(token({"sub": None, "tenant": None})), "neither a tenant nor a sub claim"),
        (bearer(token({"tenant": "two words"})), "claim tenant must be"),
    ],
)
async def test_bad_tokens_are_401_with_the_reason(
    tmp_path: Path, redis_server: RedisServer, credentials: dict[str, str], problem: str
) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks()))
    async with start_webhook(
        tmp_path, redis_server.url, BUDGETS, identity=identity_settings(jwks_file=keys)
    ) as wh:
        answer = await wh.check(CHAT, headers={**credentials, "x-budget-tenant": "globex"})
        assert answer.status == 401
        assert answer.error["code"] == "missing_identity"
        assert problem in answer.error["message"]


async def test_keys_from_a_jwks_url(
    tmp_path: Path, redis_server: RedisServer, jwks_url: str
) -> None:
    async with start_webhook(
        tmp_path, redis_server.url, BUDGETS, identity=identity_settings(jwks_url=jwks_url)
    ) as wh:
        assert (await wh.api("/readyz")).status == 200
        assert (await wh.check(CHAT, headers=bearer(token()))).status == 200
