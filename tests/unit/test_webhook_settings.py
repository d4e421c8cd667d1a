"""The webhook's options: the overload settings and their relation to the ledger's."""

from __future__ import annotations

import pytest

from budget_guard.webhook.settings import WebhookSettings


def test_defaults_follow_envoys_timeout() -> None:
    settings = WebhookSettings.from_args([])
    assert settings.listen.gateway_timeout_ms == 200  # Envoy's ext_authz default
    assert settings.redis.timeout_ms == 50
    assert settings.listen.max_inflight_decisions == 512


def test_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGET_GUARD_GATEWAY_TIMEOUT_MS", "600")
    settings = WebhookSettings.from_args(
        ["--ledger-timeout-ms", "250", "--max-inflight-decisions", "64"]
    )
    assert (settings.listen.gateway_timeout_ms, settings.redis.timeout_ms) == (600, 250)
    assert settings.listen.max_inflight_decisions == 64


def test_a_ledger_timeout_that_leaves_no_time_before_the_gateway_is_refused() -> None:
    with pytest.raises(SystemExit) as refused:
        WebhookSettings.from_args(["--ledger-timeout-ms", "200"])
    assert "--ledger-timeout-ms (200) must be below --gateway-timeout-ms (200)" in str(
        refused.value
    )
    with pytest.raises(SystemExit, match="--max-inflight-decisions must be at least 1"):
        WebhookSettings.from_args(["--max-inflight-decisions", "0"])
