"""The CRD schema and the domain's parser read the same fields, with the same enums
and defaults: a field added to one and not the other fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from budget_guard.domain.budget import (
    DEFAULT_THRESHOLDS,
    Enforcement,
    FailureMode,
    Reservation,
)
from budget_guard.domain.manifest import parse_budget, parse_burst_budget
from budget_guard.domain.periods import Period
from budget_guard.operator.crds import burstbudget_crd, llmbudget_crd

# Fields the operator reads and the decision path never needs.
OPERATOR_ONLY = {
    "spec.alerts",
    "spec.alerts.secretRef",
    "spec.alerts.secretRef.name",
    "spec.alerts.secretRef.key",
    "spec.alerts.secretRef.namespace",
    "spec.alerts.format",
}


class Recording(dict[str, Any]):
    """A dict that remembers which keys were read, under dotted paths."""

    def __init__(self, data: dict[str, Any], path: str, seen: set[str]) -> None:
        super().__init__(data)
        self._path, self._seen = path, seen

    def _wrap(self, key: str, value: Any) -> Any:
        path = f"{self._path}.{key}" if self._path else key
        self._seen.add(path)
        if isinstance(value, dict):
            return Recording(value, path, self._seen)
        if isinstance(value, list):
            return [Recording(v, path, self._seen) if isinstance(v, dict) else v for v in value]
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._wrap(key, super().get(key, default)) if key in self else default

    def __getitem__(self, key: str) -> Any:
        return self._wrap(key, super().__getitem__(key))

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        for key in list(self.keys()):
            yield key, self._wrap(key, super().__getitem__(key))


def schema_paths(schema: dict[str, Any], path: str) -> set[str]:
    paths = {path}
    for name, child in schema.get("properties", {}).items():
        paths |= schema_paths(child, f"{path}.{name}")
    if "items" in schema:
        paths |= {p for p in schema_paths(schema["items"], path) if p != path}
    return paths


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


FULL_BUDGET = {
    "scope": {"tenant": "acme", "user": "*", "tier": "pro", "feature": "chat", "model": "gpt-4o"},
    "limit": "10",
    "period": "Daily",
    "timeZone": "UTC",
    "thresholds": [50],
    "enforcement": "Observe",
    "failureMode": "Open",
    "failOpenLimit": "0.50",
    "reservation": "WorstCase",
    "onSoftLimit": {"degradeModels": {"gpt-4o": "gpt-4o-mini"}},
    "schedule": [{"months": [12], "multiplier": "2"}],
    "upgradeURL": "https://x.example",
    "commitment": {"amount": "5", "discountPercent": "12.5"},
    "anomaly": {"factor": 5},
}
FULL_BURST = {
    "budgetRef": {"name": "b"},
    "amount": "5",
    "validFrom": "2026-01-01T00:00:00Z",
    "validUntil": "2026-02-01T00:00:00Z",
    "approvedBy": "cfo",
    "reason": "launch",
    "maxRequestCost": "1",
}


@pytest.mark.parametrize(
    ("crd", "kind", "spec", "parse"),
    [
        (llmbudget_crd(), "LLMBudget", FULL_BUDGET, parse_budget),
        (burstbudget_crd(), "BurstBudget", FULL_BURST, parse_burst_budget),
    ],
)
def test_the_parser_reads_exactly_the_schema_fields(
    crd: dict[str, Any], kind: str, spec: dict[str, Any], parse: Any
) -> None:
    declared = schema_paths(spec_schema(crd), "spec") - OPERATOR_ONLY - {"spec"}
    assert {p for p in declared if p.count(".") == 1} == {f"spec.{k}" for k in spec}, (
        "the full example must set every field of the schema"
    )
    seen: set[str] = set()
    manifest = Recording({"kind": kind, "metadata": {"name": "x"}, "spec": spec}, "", seen)
    parse(manifest)
    read = {p for p in seen if p.startswith("spec.")}
    # Map keys (degradeModels' models) are data, not schema fields.
    read = {p for p in read if not p.startswith("spec.onSoftLimit.degradeModels.")}
    assert read == declared


def test_enums_and_defaults_match_the_domain() -> None:
    props = spec_schema(llmbudget_crd())["properties"]
    assert props["period"]["enum"] == [p.value for p in Period]
    assert props["enforcement"]["enum"] == [e.value for e in Enforcement]
    assert props["failureMode"]["enum"] == [f.value for f in FailureMode]
    assert props["reservation"]["enum"] == [r.value for r in Reservation]
    assert props["thresholds"]["default"] == list(DEFAULT_THRESHOLDS)
    defaults = parse_budget(
        {"kind": "LLMBudget", "metadata": {"name": "d"}, "spec": {"limit": "1"}}
    )
    assert props["period"]["default"] == defaults.period.value
    assert props["enforcement"]["default"] == defaults.enforcement.value
    assert props["failureMode"]["default"] == defaults.failure_mode.value
    assert props["reservation"]["default"] == defaults.reservation.value
    assert props["timeZone"]["default"] == defaults.zone.key
