"""Identity from a bearer JWT the webhook verifies itself (RS256 / ES256, JWKS file or URL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from budget_guard.localservices import RedisServer
from budget_guard.webhook.settings import IdentitySettings, JwtSettings
from tests.fixtures.webhook import RunningWebhook, budget, start_webhook

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


def jwt_webhook(tmp_path: Path, redis_url: str) -> AbstractAsyncContextManager[RunningWebhook]:
    """A webhook that takes identities from JWTs signed by ``jwks()``'s keys."""
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks()))
    return start_webhook(tmp_path, redis_url, BUDGETS, identity=identity_settings(jwks_file=keys))


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
    async with jwt_webhook(tmp_path, redis_server.url) as wh:
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


NOT_ALLOWED = "The specified alg value is not allowed"
BAD_SIGNATURE = "Signature verification failed"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], header: dict[str, Any], signature: bytes = b"") -> str:
    """A token built by hand: an ``alg`` the library would refuse to sign with."""
    payload = jwt.decode(token(claims), options={"verify_signature": False})
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{_b64(signature)}"


def _hs256_with_the_public_key() -> str:
    """Algorithm confusion: HMAC keyed with the RSA public key a JWKS publishes."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    payload = jwt.decode(token(), options={"verify_signature": False})
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _signature_of_another_token() -> str:
    """A valid signature, moved onto claims it did not sign."""
    genuine = token({"tenant": "globex"}).rsplit(".", 1)[1]
    forged = token({"tenant": "acme"}).rsplit(".", 1)[0]
    return f"{forged}.{genuine}"


@pytest.mark.parametrize(
    ("name", "credentials", "problem"),
    [
        ("alg none", bearer(_unsigned({}, {"alg": "none", "kid": "rsa-1"})), NOT_ALLOWED),
        ("alg None", bearer(_unsigned({}, {"alg": "None", "kid": "rsa-1"})), NOT_ALLOWED),
        ("HS256 keyed with the public key", bearer(_hs256_with_the_public_key()), NOT_ALLOWED),
        (
            "signature stripped",
            bearer(_unsigned({}, {"alg": "RS256", "kid": "rsa-1"})),
            BAD_SIGNATURE,
        ),
        ("signature moved", bearer(_signature_of_another_token()), BAD_SIGNATURE),
        ("no exp", bearer(token({"exp": None})), '"exp"'),
        ("no iss", bearer(token({"iss": None})), '"iss"'),
        ("not yet valid", bearer(token({"nbf": int(time.time()) + 3600})), "not yet valid"),
        ("expired within the hour", bearer(token({"exp": int(time.time()) - 120})), "expired"),
        ("issuer as a prefix", bearer(token({"iss": ISSUER + "evil/"})), "Invalid issuer"),
        ("audience in a list of others", bearer(token({"aud": ["a", "b"]})), "Audience"),
        ("Basic, not Bearer", {"authorization": "Basic " + _b64(b"globex:alice")}, "Bearer"),
    ],
)
async def test_forged_and_stale_tokens_are_refused_and_headers_never_stand_in(
    tmp_path: Path,
    redis_server: RedisServer,
    name: str,
    credentials: dict[str, str],
    problem: str,
) -> None:
    """Each is a 401 naming the reason, whatever identity headers ride along."""
    async with jwt_webhook(tmp_path, redis_server.url) as wh:
        headers = {**credentials, "x-budget-tenant": "globex", "x-budget-user": "alice"}
        answer = await wh.check(CHAT, headers=headers)
        assert answer.status == 401, name
        assert answer.error["code"] == "missing_identity"
        assert problem in answer.error["message"], answer.error["message"]


async def test_every_identity_header_a_client_sends_is_ignored(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A budget per identity header value, each already spent: a client that could
    choose any of them through a header would be denied; the token's identity is not."""
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks()))
    spent = [
        budget("acme", "0.000001", tenant="acme"),
        budget("mallory", "0.000001", user="mallory"),
        budget("free-tier", "0.000001", tier="free"),
        budget("research", "0.000001", feature="research"),
        budget("globex", "100", tenant="globex"),
    ]
    chosen = {
        "x-budget-tenant": "acme",
        "x-budget-user": "mallory",
        "x-budget-tier": "free",
        "x-budget-feature": "research",
    }
    settings = identity_settings(jwks_file=keys)
    async with start_webhook(
        tmp_path,
        redis_server.url,
        spent,
        identity=settings,
        strip_headers=settings.identity_headers,
    ) as wh:
        for name, value in chosen.items():
            answer = await wh.check(CHAT, headers=bearer(token(), **{name: value}))
            assert answer.status == 200, (name, answer.body)
            assert name in answer.headers["x-envoy-auth-headers-to-remove"].split(",")
        everything = await wh.check(CHAT, headers=bearer(token(), **chosen))
        assert everything.status == 200
        assert everything.headers["x-budget-name"] == "default/globex"
        # and the token's own claims do decide: the same token for user mallory is denied
        mallory = await wh.check(CHAT, headers=bearer(token({"sub": "mallory"})))
        assert mallory.status == 429
