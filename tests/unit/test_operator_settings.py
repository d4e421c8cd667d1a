"""The operator's settings: flags, or BUDGET_GUARD_* variables when a flag is absent."""

from __future__ import annotations

import pytest

from budget_guard.operator.settings import parse


def test_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUDGET_GUARD_NAMESPACE", raising=False)
    settings = parse(["--namespace", "a", "--namespace", "b", "--priority", "7", "--standalone"])
    assert settings.namespaces == ("a", "b")
    assert settings.priority == 7
    assert settings.standalone is True
    assert settings.sync_interval_seconds == 15.0


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGET_GUARD_NAMESPACE", "team-a, team-b")
    monkeypatch.setenv("BUDGET_GUARD_SYNC_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("BUDGET_GUARD_PRIORITY", "3")
    monkeypatch.setenv("BUDGET_GUARD_KOPF_WORKERS", "8")
    settings = parse([])
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.sync_interval_seconds == 5.0
    assert settings.priority == 3
    assert settings.kopf_workers == 8
    assert parse(["--namespace", "only"]).namespaces == ("only",)  # a flag wins


def test_replicas_get_different_priorities_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUDGET_GUARD_PRIORITY", raising=False)
    priorities = {parse([]).priority for _ in range(20)}
    assert len(priorities) > 1


def test_a_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BUDGET_GUARD_SYNC_INTERVAL_SECONDS", "soon")
    with pytest.raises(SystemExit):
        parse([])
    assert "BUDGET_GUARD_SYNC_INTERVAL_SECONDS" in capsys.readouterr().err
