"""Who may call the API listener: bearer tokens, each with the tenants it may act for.

Two sources, both re-read when they change (at most once a second, on the next call),
so that a token is rotated or revoked without a restart:

- ``--usage-token-file FILE``: one shared token, the whole file. It acts as admin.
- ``--api-tokens PATH``, in one of two forms (docs/webhook.md, "Tokens and tenancy"):

  * a YAML file: ``tokens:`` a list of ``{name, token, tenants}``, where ``tenants``
    is a list of tenant names or ``"*"`` (admin: every tenant, and budgets of none);
  * a directory: a Kubernetes Secret mounted as is (files ``token`` and ``tenants``,
    the latter names separated by commas or new lines, or ``*``), or one
    subdirectory per such Secret, and/or ``*.yaml`` files of the list form.

A token is compared in constant time: the SHA-256 digest of what was presented is
compared with the digest of every known token, all of them, with no early exit, so
the time taken says nothing about which token (or how much of one) matched. Only the
digests are kept in memory.

A source that is malformed at start-up stops the webhook with a message that names
the file and what is wrong; a malformed rewrite is logged as an error and the last
good set stays in force.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from budget_guard.domain.budget import is_valid_scope_value
from budget_guard.webhook.responses import JSON, error_answer

log = logging.getLogger(__name__)

ADMIN = "*"
MIN_TOKEN_CHARS = 16
RECHECK_SECONDS = 1.0
SHARED_TOKEN_NAME = "usage-token-file"  # noqa: S105 - a name for logs, not a token
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class ApiTokensError(ValueError):
    """A token source that cannot be used; the message names the file and the fault."""


class Unauthorized(Exception):
    """No token, or not a known one: answered 401 with this message."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Whoever presented a known token: its name (for logs) and the tenants it may act
    for (None: admin, every tenant and the budgets of none)."""

    name: str
    tenants: frozenset[str] | None

    @property
    def is_admin(self) -> bool:
        return self.tenants is None

    def may_act_for(self, tenant: str | None) -> bool:
        """A tenant token acts only for its tenants; a request or budget of no tenant is
        the admin's alone."""
        return self.tenants is None or (tenant is not None and tenant in self.tenants)

    def describe(self) -> str:
        return "every tenant" if self.tenants is None else ", ".join(sorted(self.tenants))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _tenants(raw: object, where: str) -> frozenset[str] | None:
    """A list of tenant names (or one text of names), or ``*`` for admin."""
    if isinstance(raw, str):
        names = [part for part in re.split(r"[\s,]+", raw) if part]
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        names = [item.strip() for item in raw]
    else:
        raise ApiTokensError(f"{where}: tenants must be a list of tenant names or '*'")
    if names == [ADMIN]:
        return None
    if not names:
        raise ApiTokensError(f"{where}: tenants is empty (name the tenants, or '*' for admin)")
    bad = [name for name in names if not is_valid_scope_value(name)]
    if bad:
        raise ApiTokensError(f"{where}: {bad[0]!r} is not a tenant name (or use '*' alone)")
    return frozenset(names)


def _token(raw: object, where: str) -> str:
    if not isinstance(raw, str) or len(raw.strip()) < MIN_TOKEN_CHARS:
        raise ApiTokensError(f"{where}: token must be a text of at least {MIN_TOKEN_CHARS} chars")
    token = raw.strip()
    if any(char.isspace() for char in token):
        raise ApiTokensError(f"{where}: token must not contain white space")
    return token


def _listed(path: Path) -> Iterator[tuple[str, str, frozenset[str] | None]]:
    """The list form: ``tokens: [{name, token, tenants}, ...]``."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ApiTokensError(f"{path}: cannot be read as YAML: {error}") from None
    tokens = document.get("tokens") if isinstance(document, Mapping) else None
    if not isinstance(tokens, list):
        raise ApiTokensError(f"{path}: expected 'tokens:', a list of {{name, token, tenants}}")
    for index, item in enumerate(tokens):
        where = f"{path}: tokens[{index}]"
        if not isinstance(item, Mapping):
            raise ApiTokensError(f"{where}: expected an object with name, token and tenants")
        unknown = set(item) - {"name", "token", "tenants"}
        if unknown:
            raise ApiTokensError(f"{where}: unknown field {sorted(unknown)[0]!r}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ApiTokensError(f"{where}: name must be a plain name (letters, digits, ._-)")
        if "tenants" not in item:
            raise ApiTokensError(f"{where}: tenants is required (tenant names, or '*')")
        yield name, _token(item.get("token"), where), _tenants(item["tenants"], where)


def _secret(directory: Path) -> tuple[str, str, frozenset[str] | None]:
    """One mounted Secret: files ``token`` and ``tenants``."""
    try:
        token = (directory / "token").read_text()
        tenants = (directory / "tenants").read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ApiTokensError(
            f"{directory}: a token Secret needs the keys 'token' and 'tenants': {error}"
        ) from None
    return directory.name, _token(token, str(directory)), _tenants(tenants, f"{directory}")


def _visible(directory: Path) -> list[Path]:
    """A directory's entries, without the hidden ones (a Secret mount's ``..data``)."""
    return sorted(child for child in directory.iterdir() if not child.name.startswith("."))


def _entries(path: Path) -> Iterator[tuple[str, str, frozenset[str] | None]]:
    if path.is_file():
        yield from _listed(path)
        return
    if not path.is_dir():
        raise ApiTokensError(f"{path}: no such file or directory")
    if (path / "token").exists():
        yield _secret(path)
        return
    for child in _visible(path):
        if child.is_dir():
            yield _secret(child)
        elif child.suffix in (".yaml", ".yml"):
            yield from _listed(child)
        else:
            raise ApiTokensError(
                f"{child}: expected a subdirectory (one token Secret: token, tenants) or a "
                "*.yaml list of tokens"
            )


def read_api_tokens(path: Path) -> dict[bytes, Caller]:
    """Every token of ``--api-tokens`` by its digest; ApiTokensError when malformed."""
    found: dict[bytes, Caller] = {}
    names: set[str] = set()
    for name, token, tenants in _entries(path):
        digest = _digest(token)
        if name in names:
            raise ApiTokensError(f"{path}: two tokens are named {name!r}")
        if digest in found:
            raise ApiTokensError(f"{path}: {name!r} has the same token as {found[digest].name!r}")
        names.add(name)
        found[digest] = Caller(name, tenants)
    if not found:
        raise ApiTokensError(f"{path}: no tokens found")
    return found


def read_shared_token(path: Path) -> dict[bytes, Caller]:
    """``--usage-token-file``: one token, admin."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ApiTokensError(f"{path}: unreadable: {error}") from None
    if not token:
        raise ApiTokensError(f"{path}: the usage token file is empty")
    return {_digest(token): Caller(SHARED_TOKEN_NAME, None)}


def _files(path: Path) -> Iterator[Path]:
    """The files a source is read from (two levels), for noticing a change."""
    yield path
    if path.is_dir():
        for child in _visible(path):
            yield child
            if child.is_dir():
                yield from _visible(child)


def _fingerprint(path: Path) -> tuple[Any, ...]:
    stamps: list[Any] = []
    try:
        for file in _files(path):
            status = file.stat()
            stamps.append((str(file), status.st_ino, status.st_size, status.st_mtime_ns))
    except OSError as error:
        stamps.append((str(path), str(error)))
    return tuple(stamps)


class _Source:
    """One token source, its last good set, and what it looked like when read."""

    def __init__(self, path: Path, read: Callable[[Path], dict[bytes, Caller]]) -> None:
        self.path = path
        self._read = read
        self._stamp = _fingerprint(path)
        self.tokens = read(path)  # at start-up a fault is raised, not logged

    def refresh(self) -> None:
        stamp = _fingerprint(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            tokens = self._read(self.path)
        except ApiTokensError as error:
            log.error("API tokens not reloaded, the last good set stays in force: %s", error)
            return
        self.tokens = tokens
        log.info(
            "API tokens reloaded from %s: %s",
            self.path,
            ", ".join(sorted(caller.name for caller in tokens.values())),
        )


class ApiTokens:
    """The known tokens of the API listener, from ``--api-tokens`` and/or
    ``--usage-token-file``; re-read when they change."""

    def __init__(
        self,
        api_tokens: Path | None,
        usage_token_file: Path | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources: list[_Source] = []
        if api_tokens is not None:
            self._sources.append(_Source(api_tokens, read_api_tokens))
        if usage_token_file is not None:
            self._sources.append(_Source(usage_token_file, read_shared_token))
        self._monotonic = monotonic
        self._checked = monotonic()
        self._known = self._merged()

    def _merged(self) -> list[tuple[bytes, Caller]]:
        merged: dict[bytes, Caller] = {}
        for source in self._sources:
            merged.update(source.tokens)
        return list(merged.items())

    def _refresh(self) -> None:
        now = self._monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        for source in self._sources:
            source.refresh()
        self._known = self._merged()

    def caller(self, authorization: str) -> Caller:
        """Who presented ``authorization`` (``Bearer <token>``); Unauthorized if nobody."""
        if not self._sources:
            raise Unauthorized(
                "the API is closed: the webhook has neither --api-tokens nor --usage-token-file"
            )
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("send Authorization: Bearer <token>")
        self._refresh()
        digest = _digest(presented.strip())
        found: Caller | None = None
        for known, caller in self._known:  # every one, no early exit: constant time
            if hmac.compare_digest(digest, known):
                found = caller
        if found is None:
            raise Unauthorized("unknown or revoked token")
        return found


def forbidden(message: str) -> web.Response:
    """403: a known token, but not one that acts for this tenant."""
    return web.Response(
        status=403, body=error_answer(403, "forbidden_tenant", message).body, content_type=JSON
    )


def authenticate(tokens: ApiTokens, request: web.Request) -> Caller | web.Response:
    """The caller of a protected route, or the 401 to answer."""
    try:
        return tokens.caller(request.headers.get("authorization", ""))
    except Unauthorized as error:
        body = error_answer(401, "unauthorized", str(error)).body
        return web.Response(
            status=401,
            body=body,
            content_type=JSON,
            headers={"www-authenticate": 'Bearer realm="budget-guard"'},
        )
