"""Who is asking: from gateway-set headers, or from a bearer JWT the webhook verifies.

In ``headers`` mode the identity headers are trusted: use it only behind a hop that
sets them and strips client-sent copies. In ``jwt`` mode the identity comes from the
verified token's claims alone; client-sent identity headers are ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import jwt

from budget_guard.domain.budget import SCOPE_VALUE_RULE, is_valid_scope_value
from budget_guard.domain.resolution import RequestIdentity
from budget_guard.webhook.settings import IdentitySettings, JwtSettings

log = logging.getLogger(__name__)

_VERIFIED_CACHE_SIZE = 10_000


class IdentityError(Exception):
    """No usable identity: answered 401 with this message."""


class IdentityResolver(Protocol):
    def resolve(self, headers: Mapping[str, str]) -> RequestIdentity: ...


def _checked(name: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IdentityError(f"{name} must be a string")
    value = value.strip()
    if "," in value:
        raise IdentityError(f"{name} has several values ({value!r}); send exactly one")
    if not is_valid_scope_value(value):
        raise IdentityError(f"{name} must be {SCOPE_VALUE_RULE}")
    return value


class HeaderIdentity:
    def __init__(self, settings: IdentitySettings) -> None:
        self._settings = settings
        # Identities seen recently, by their raw header values: a few callers send the
        # same headers many times, and validating them again costs more than looking up.
        self._seen: dict[tuple[str | None, ...], RequestIdentity] = {}

    def resolve(self, headers: Mapping[str, str]) -> RequestIdentity:
        s = self._settings
        raw = (
            headers.get(s.tenant_header),
            headers.get(s.user_header),
            headers.get(s.tier_header),
            headers.get(s.feature_header),
        )
        known = self._seen.get(raw)
        if known is not None:
            return known
        identity = self._validate(headers)
        if len(self._seen) >= _VERIFIED_CACHE_SIZE:
            self._seen.clear()
        self._seen[raw] = identity
        return identity

    def _validate(self, headers: Mapping[str, str]) -> RequestIdentity:
        s = self._settings
        tenant = _checked(s.tenant_header, headers.get(s.tenant_header))
        user = _checked(s.user_header, headers.get(s.user_header))
        tier = _checked(s.tier_header, headers.get(s.tier_header))
        feature = _checked(s.feature_header, headers.get(s.feature_header))
        if tenant is None and user is None:
            if s.anonymous is not None:
                return s.anonymous
            raise IdentityError(
                f"no identity: send {s.tenant_header} and/or {s.user_header} "
                "(set by the gateway), or configure --anonymous-identity"
            )
        return RequestIdentity(tenant=tenant, user=user, tier=tier, feature=feature)


class JwksKeys:
    """The issuer's signing keys by key id, from a file or a URL, refreshed off the hot path.

    Not PyJWT's ``PyJWKClient``: it fetches with blocking urllib, and on an unknown key
    id it fetches right then, which here would stall every check on the event loop.
    Keys are parsed with PyJWT's ``PyJWK``; only the fetching (aiohttp, in the
    background, on a timer) is ours.
    """

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._keys: dict[str, Any] = {}
        self._last_refresh = 0.0
        self.error: str | None = "not loaded yet"

    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    def key(self, key_id: str | None) -> Any:
        if key_id is not None and key_id in self._keys:
            return self._keys[key_id]
        if key_id is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    def load_document(self, document: Mapping[str, Any]) -> None:
        keys = {}
        for index, jwk in enumerate(document.get("keys", [])):
            try:
                parsed = jwt.PyJWK.from_dict(dict(jwk))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as error:
                log.warning("JWKS key %d skipped: %s", index, error)
                continue
            keys[jwk.get("kid") or f"#{index}"] = parsed.key
        if not keys:
            raise ValueError("the JWKS document holds no usable key")
        self._keys = keys
        self.error = None

    async def refresh(self, session: aiohttp.ClientSession | None = None) -> None:
        settings = self._settings
        try:
            if settings.jwks_file is not None:
                document = json.loads(settings.jwks_file.read_text())
            elif settings.jwks_url is not None and session is not None:
                async with session.get(settings.jwks_url, timeout=aiohttp.ClientTimeout(5)) as r:
                    r.raise_for_status()
                    document = await r.json(content_type=None)
            else:
                return
            self.load_document(document)
            self._last_refresh = time.monotonic()
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as error:
            self.error = f"{type(error).__name__}: {error}"
            log.error("JWKS could not be loaded: %s; previous keys stay in use", self.error)

    async def keep_fresh(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self._settings.jwks_refresh_seconds)
            await self.refresh(session)


class JwtIdentity:
    def __init__(self, settings: IdentitySettings, keys: JwksKeys) -> None:
        self._settings = settings
        self._jwt = settings.jwt
        self._keys = keys
        # Verified tokens by their text, with their expiry: a token is reused across many
        # requests, and verifying a signature costs far more than the rest of a decision.
        self._verified: OrderedDict[str, tuple[float, RequestIdentity]] = OrderedDict()

    def resolve(self, headers: Mapping[str, str]) -> RequestIdentity:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            if self._settings.anonymous is not None:
                return self._settings.anonymous
            raise IdentityError("no identity: send Authorization: Bearer <JWT>")
        token = token.strip()
        cached = self._verified.get(token)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        expires, identity = self._verify(token)
        self._verified[token] = (expires, identity)
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity

    def _verify(self, token: str) -> tuple[float, RequestIdentity]:
        settings = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise IdentityError(f"invalid bearer token: {error}") from None
        key = self._keys.key(header.get("kid"))
        if key is None:
            raise IdentityError(f"invalid bearer token: unknown signing key {header.get('kid')!r}")
        options = {"require": ["exp"] + (["iss"] if settings.issuer else [])}
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(settings.algorithms),
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.InvalidTokenError as error:
            raise IdentityError(f"invalid bearer token: {error}") from None
        identity = RequestIdentity(
            tenant=_checked(f"claim {settings.tenant_claim}", claims.get(settings.tenant_claim)),
            user=_checked(f"claim {settings.user_claim}", claims.get(settings.user_claim)),
            tier=_checked(f"claim {settings.tier_claim}", claims.get(settings.tier_claim)),
            feature=_checked(f"claim {settings.feature_claim}", claims.get(settings.feature_claim)),
        )
        if identity.tenant is None and identity.user is None:
            raise IdentityError(
                f"the token has neither a {settings.tenant_claim} nor a {settings.user_claim} claim"
            )
        return float(claims["exp"]), identity
