"""Invalid LLMBudget and BurstBudget manifests and what a real kube-apiserver (with the
project's CRDs) answers to each: the table in docs/reliability.md ("Bad input") is
generated from these cases, and this test fails when the two differ, so the page
cannot drift from the API server.

To rewrite the table after a change to the CRDs or to the cases:
``BUDGET_GUARD_WRITE_MANIFEST_TABLE=1 pytest tests/integration/test_invalid_manifests.py``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from budget_guard.localservices import KubeAPIServer
from tests.fixtures.crd_probes import PROBE_BUDGET, PROBE_BURST
from tests.fixtures.operator import GROUP, Cluster

pytestmark = pytest.mark.kube

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- invalid-manifests:begin -->", "<!-- invalid-manifests:end -->"

MISSING = object()


@dataclass(frozen=True)
class Case:
    """One invalid manifest: the base with ``changes`` (dotted paths) applied."""

    base: dict[str, Any]
    changes: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.base["kind"])

    @property
    def label(self) -> str:
        parts = []
        for path, value in self.changes.items():
            if value is MISSING:
                parts.append(f"no `{path}`")
            else:
                parts.append(f"`{path}: {json.dumps(value, ensure_ascii=False)}`")
        return ", ".join(parts)

    def manifest(self) -> dict[str, Any]:
        manifest = copy.deepcopy(self.base)
        for path, value in self.changes.items():
            *parents, leaf = path.split(".")
            target = manifest
            for name in parents:
                target = target.setdefault(name, {})
            if value is MISSING:
                target.pop(leaf, None)
            else:
                target[leaf] = value
        return manifest


def budget(**changes: Any) -> Case:
    return Case(PROBE_BUDGET, changes)


def burst(**changes: Any) -> Case:
    return Case(PROBE_BURST, changes)


def _spec(**changes: Any) -> dict[str, Any]:
    return {f"spec.{name}": value for name, value in changes.items()}


CASES = [
    budget(**_spec(limit="-5")),
    budget(**_spec(limit="0")),
    budget(**_spec(limit="1.1234567")),
    budget(**_spec(limit="lots")),
    budget(**_spec(limit=100)),
    budget(**_spec(limit="1e3")),
    budget(**_spec(limit=MISSING)),
    budget(**_spec(limitUSD="100")),
    budget(**_spec(thresholds=[80, 70])),
    budget(**_spec(thresholds=[0, 50])),
    budget(**_spec(thresholds=[50, 100])),
    budget(**_spec(thresholds="80")),
    budget(**_spec(period="Fortnightly")),
    budget(**{"spec.scope": {"tenant": "*"}}),
    budget(**{"spec.scope": {"user": "al*ce"}}),
    budget(**{"spec.scope": {"tenant": "a b"}}),
    budget(**{"spec.scope": {"team": "x"}}),
    budget(**_spec(enforcement="Block")),
    budget(**_spec(failureMode="Maybe")),
    budget(**_spec(reservation="Maximum")),
    budget(**_spec(onSoftLimit={"degradeModels": {"gpt-4o": "gpt-4o"}})),
    budget(**_spec(schedule=[{"months": [13], "multiplier": "2"}])),
    budget(**_spec(schedule=[{"months": [1], "multiplier": "0"}])),
    budget(**_spec(upgradeURL="ftp://x")),
    budget(**_spec(failureMode="Closed", failOpenLimit="5")),
    budget(**_spec(failOpenLimit="0")),
    budget(**_spec(commitment={"amount": "0"})),
    budget(**_spec(commitment={"discountPercent": "5"})),
    budget(**_spec(commitment={"amount": "500", "discountPercent": "100"})),
    budget(**_spec(anomaly={"factor": 1})),
    budget(spec=MISSING),
    budget(**{"metadata.name": "Bad_Name"}),
    budget(apiVersion="budgetguard.io/v2"),
    burst(**_spec(validUntil="2026-11-01T00:00:00Z")),
    burst(**_spec(validFrom="next monday")),
    burst(**_spec(approvedBy="  ")),
    burst(**_spec(approvedBy=MISSING)),
    burst(**_spec(amount="-10")),
    burst(**_spec(maxRequestCost="0.0000001")),
    burst(**_spec(budgetRef={})),
]


def _answer(kube: KubeAPIServer, namespace: str, case: Case) -> str:
    """What the API server says to a dry-run create with strict field validation."""
    plural = {"LLMBudget": "llmbudgets", "BurstBudget": "burstbudgets"}[case.kind]
    path = f"{GROUP}/namespaces/{namespace}/{plural}?dryRun=All&fieldValidation=Strict"
    status, body = kube.request("POST", path, case.manifest())
    assert 400 <= status < 500, (case.label, status, body)
    message = body["message"] if isinstance(body, dict) else str(body)
    return f"{status}: {message}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[tuple[Case, str]]) -> str:
    lines = ["| kind | manifest | the API server's answer |", "|---|---|---|"]
    lines += [f"| {case.kind} | {_cell(case.label)} | {_cell(answer)} |" for case, answer in rows]
    return "\n".join(lines)


def documented_table() -> str:
    text = DOC.read_text()
    found = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.DOTALL)
    assert found, f"{DOC} has no {BEGIN} ... {END} block"
    return found.group(1)


def test_every_invalid_manifest_is_refused_with_the_documented_message(
    crds: KubeAPIServer,
) -> None:
    namespace = Cluster.fresh(crds, "invalid").namespace
    rows = [(case, _answer(crds, namespace, case)) for case in CASES]
    table = render(rows)
    if os.environ.get("BUDGET_GUARD_WRITE_MANIFEST_TABLE") == "1":
        text = DOC.read_text()
        DOC.write_text(text.replace(documented_table(), table))
    assert documented_table() == table, (
        "docs/reliability.md's table of invalid manifests differs from the API server's "
        "answers; rewrite it with BUDGET_GUARD_WRITE_MANIFEST_TABLE=1:\n" + table
    )
    listed = crds.request("GET", f"{GROUP}/namespaces/{namespace}/llmbudgets")[1]
    assert listed["items"] == []  # dry runs: nothing was stored
