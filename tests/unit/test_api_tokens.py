"""The API tokens' sources: both forms read, a token kept only as its digest, every
known token compared (no early exit), a rewrite seen after the re-check interval."""

from __future__ import annotations

from pathlib import Path

import pytest

import budget_guard.webhook.api_tokens as module
from budget_guard.webhook.api_tokens import (
    ApiTokens,
    ApiTokensError,
    Caller,
    Unauthorized,
    read_api_tokens,
)
from budget_guard.webhook.openapi import document

TOKEN = "a-token-of-twenty-chars"


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_both_forms_and_the_shared_token(tmp_path: Path) -> None:
    listed = tmp_path / "tokens.yaml"
    listed.write_text(f"tokens: [{{name: app, token: {TOKEN}, tenants: [acme, beta]}}]\n")
    secrets = tmp_path / "secrets"
    (secrets / "ops").mkdir(parents=True)
    (secrets / "ops" / "token").write_text("ops-token-0123456789\n")
    (secrets / "ops" / "tenants").write_text("*\n")
    (secrets / "list.yaml").write_text(listed.read_text())
    assert sorted(c.name for c in read_api_tokens(secrets).values()) == ["app", "ops"]
    shared = tmp_path / "usage-token"
    shared.write_text("short\n")  # the shared token keeps its old rule: any non-empty text
    tokens = ApiTokens(listed, shared)
    assert tokens.caller(f"Bearer {TOKEN}") == Caller("app", frozenset({"acme", "beta"}))
    assert tokens.caller("bearer short").is_admin
    assert TOKEN.encode() not in repr(vars(tokens)).encode()  # digests only


def test_every_token_is_compared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = tmp_path / "tokens.yaml"
    names = [f"app{i}" for i in range(5)]
    listed.write_text(
        "tokens:\n"
        + "".join(f"- {{name: {n}, token: {n}-0123456789abcdef, tenants: [t]}}\n" for n in names)
    )
    tokens = ApiTokens(listed, None)
    compared: list[bytes] = []
    real = module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(module.hmac, "compare_digest", counting)
    assert tokens.caller("Bearer app0-0123456789abcdef").name == "app0"  # the first one
    assert len(compared) == len(names)


def test_a_rewrite_is_read_after_the_interval_and_a_bad_one_is_not(tmp_path: Path) -> None:
    listed = tmp_path / "tokens.yaml"
    listed.write_text(f"tokens: [{{name: app, token: {TOKEN}, tenants: [acme]}}]\n")
    ticks = Ticks()
    tokens = ApiTokens(listed, None, monotonic=ticks)
    listed.write_text(f"tokens: [{{name: app, token: {TOKEN}, tenants: [beta]}}]\n")
    assert tokens.caller(f"Bearer {TOKEN}").tenants == {"acme"}  # not re-checked yet
    ticks.now = 1.0
    assert tokens.caller(f"Bearer {TOKEN}").tenants == {"beta"}
    listed.write_text("tokens: [oops")
    ticks.now = 2.0
    assert tokens.caller(f"Bearer {TOKEN}").tenants == {"beta"}  # the last good set
    with pytest.raises(Unauthorized, match="unknown or revoked token"):
        tokens.caller("Bearer something-else-entirely")
    with pytest.raises(Unauthorized, match="send Authorization: Bearer <token>"):
        tokens.caller("Basic abc")


def test_no_source_closes_the_api_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Unauthorized, match="neither --api-tokens nor --usage-token-file"):
        ApiTokens(None, None).caller(f"Bearer {TOKEN}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ApiTokensError, match="no tokens found"):
        ApiTokens(tmp_path / "empty", None)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")
    with pytest.raises(ApiTokensError, match=r"notes.txt: expected a subdirectory"):
        read_api_tokens(tmp_path / "stray")


def test_a_tenant_token_acts_for_its_tenants_only() -> None:
    acme = Caller("acme-app", frozenset({"acme"}))
    assert acme.may_act_for("acme")
    assert not acme.may_act_for("beta")
    assert not acme.may_act_for(None)  # a request or budget of no tenant: admins only
    assert Caller("ops", None).may_act_for(None)


def test_the_openapi_document_names_every_refusal() -> None:
    paths = document()["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            protected = path.startswith("/v1/")
            assert ("401" in operation["responses"]) is protected, (path, method)
            assert bool(operation.get("security")) is protected, (path, method)
            assert ("413" in operation["responses"]) is (method == "post"), (path, method)
    for path in ("/v1/usage", "/v1/check", "/v1/spend"):
        assert "403" in next(iter(paths[path].values()))["responses"]
