"""The CRDs on a real API server: examples apply; bad manifests get messages that say
what to fix; the committed YAML is what the code generates."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from budget_guard.localservices import KubeAPIServer
from budget_guard.operator.crds import all_crds
from tests.fixtures.crd_probes import PROBE_BUDGET, PROBE_BURST
from tests.fixtures.operator import Cluster

pytestmark = pytest.mark.kube

ROOT = Path(__file__).resolve().parents[2]


def apply(
    kube: KubeAPIServer, manifest: dict[str, Any], ns: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(kube.binaries.kubectl),
            f"--kubeconfig={kube.kubeconfig_path}",
            "-n",
            ns,
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=yaml.safe_dump(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            manifest["spec"].pop(key, None)
        else:
            manifest["spec"][key] = value
    return manifest


def test_committed_crds_are_what_the_code_generates() -> None:
    for file_name, crd in all_crds().items():
        committed = yaml.safe_load((ROOT / "crds" / file_name).read_text())
        assert committed == crd, f"crds/{file_name} is stale: run make crds"


def test_the_examples_apply(crds: KubeAPIServer) -> None:
    files = sorted((ROOT / "examples" / "budgets").glob("*.yaml"))
    namespaces = {
        doc["metadata"]["namespace"]
        for file in files
        for doc in yaml.safe_load_all(file.read_text())
    }
    for ns in namespaces:
        crds.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    for file in files:
        result = crds.kubectl("apply", "-f", str(file))
        assert result.returncode == 0, result.stderr
    listed = crds.kubectl("get", "budgets", "-A", "-o", "name")
    assert "llmbudget.budgetguard.io/research-agent-daily" in listed.stdout
    assert "burstbudget.budgetguard.io/research-agent-launch" in listed.stdout
    short = crds.kubectl("get", "llmb", "-n", "platform", "-o", "name")
    assert "llmbudget.budgetguard.io/global-cap" in short.stdout
    assert crds.kubectl("get", "bb", "-A").returncode == 0


def test_defaults_are_filled_in(crds: KubeAPIServer) -> None:
    ns = Cluster.fresh(crds, "crd").namespace
    minimal = {
        "apiVersion": "budgetguard.io/v1alpha1",
        "kind": "LLMBudget",
        "metadata": {"name": "minimal", "namespace": ns},
        "spec": {"limit": "5"},
    }
    status, stored = crds.request(
        "POST", f"/apis/budgetguard.io/v1alpha1/namespaces/{ns}/llmbudgets", minimal
    )
    assert status == 201, stored
    spec = stored["spec"]
    assert (spec["period"], spec["timeZone"], spec["thresholds"]) == (
        "Monthly",
        "UTC",
        [70, 80, 90],
    )
    assert (spec["enforcement"], spec["failureMode"], spec["reservation"]) == (
        "Enforce",
        "Open",
        "Estimate",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit": "-5"}, "limit must be a positive amount of USD with at most 6 decimals"),
        ({"limit": "0"}, "limit must be a positive amount of USD"),
        ({"limit": "1.1234567"}, "limit must be a positive amount of USD with at most 6 decimals"),
        ({"limit": "lots"}, "limit must be a positive amount of USD"),
        ({"limit": None}, "spec.limit: Required value"),
        ({"thresholds": [80, 70]}, "thresholds must be strictly ascending, e.g. [70, 80, 90]"),
        ({"thresholds": [70, 70]}, "thresholds must be strictly ascending"),
        ({"thresholds": [0, 50]}, "thresholds are percentages strictly between 0 and 100"),
        ({"thresholds": [50, 100]}, "thresholds are percentages strictly between 0 and 100"),
        ({"period": "Fortnightly"}, 'Unsupported value: "Fortnightly"'),
        (
            {"scope": {"tenant": "*"}},
            'scope.tenant cannot contain "*": "*" is only allowed as the whole value of scope.user',
        ),
        (
            {"scope": {"user": "al*ce"}},
            "scope.user must be 1-253 characters without spaces, commas",
        ),
        ({"scope": {"user": "*", "tier": "pro"}}, None),
        ({"enforcement": "Block"}, 'Unsupported value: "Block"'),
        (
            {"onSoftLimit": {"degradeModels": {"gpt-4o": "gpt-4o"}}},
            "degradeModels must map each model to a different, cheaper one",
        ),
        ({"schedule": [{"months": [13], "multiplier": "2"}]}, "should be less than or equal to 12"),
        (
            {"schedule": [{"months": [1], "multiplier": "0"}]},
            "multiplier must be a decimal above 0 and at most 10",
        ),
        ({"upgradeURL": "ftp://x"}, "upgradeURL must be an http(s) URL"),
        (
            {"failureMode": "Closed", "failOpenLimit": "5"},
            "failOpenLimit applies only with failureMode: Open; remove it or use Open",
        ),
        ({"failOpenLimit": "0"}, "failOpenLimit must be a positive amount of USD"),
        ({"failOpenLimit": "2.50", "reservation": "WorstCase"}, None),
        ({"reservation": "Maximum"}, 'Unsupported value: "Maximum"'),
        ({"commitment": {"amount": "0"}}, "commitment.amount must be a positive amount of USD"),
        ({"commitment": {"discountPercent": "5"}}, "spec.commitment.amount: Required value"),
        (
            {"commitment": {"amount": "500", "discountPercent": "100"}},
            "commitment.discountPercent must be a percentage from 0 to below 100 with at most "
            '2 decimals, written as a string, e.g. "20"',
        ),
        (
            {"commitment": {"amount": "500", "discountPercent": "12.345"}},
            "commitment.discountPercent must be a percentage from 0 to below 100",
        ),
        (
            {"anomaly": {"factor": 1}},
            "anomaly.factor must be a whole number from 2 to 1000: how many times the usual "
            "spend rate is an anomaly (default 10)",
        ),
        ({"anomaly": {"factor": 5000}}, "anomaly.factor must be a whole number from 2 to 1000"),
        (
            {"commitment": {"amount": "500", "discountPercent": "12.5"}, "anomaly": {"factor": 4}},
            None,
        ),
    ],
)
def test_bad_budgets_are_refused_with_what_to_fix(
    crds: KubeAPIServer, changes: dict[str, Any], message: str | None
) -> None:
    ns = Cluster.fresh(crds, "crd").namespace if message is None else "default"
    result = apply(crds, with_spec(PROBE_BUDGET, **changes), ns)
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"validUntil": "2026-11-01T00:00:00Z"}, "validUntil must be after validFrom"),
        ({"approvedBy": "  "}, "approvedBy must name who approved the burst"),
        ({"approvedBy": None}, "spec.approvedBy: Required value"),
        ({"amount": "0"}, "amount must be a positive amount of USD"),
        ({"amount": "-10"}, "amount must be a positive amount of USD"),
        (
            {"maxRequestCost": "0.0000001"},
            "maxRequestCost must be a positive amount of USD with at most 6 decimals",
        ),
        ({"validFrom": "next monday"}, "validFrom"),
    ],
)
def test_bad_burst_budgets_are_refused_with_what_to_fix(
    crds: KubeAPIServer, changes: dict[str, Any], message: str
) -> None:
    result = apply(crds, with_spec(PROBE_BURST, **changes), "default")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
