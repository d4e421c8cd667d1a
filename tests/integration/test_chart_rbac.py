"""The chart's RBAC is enough, and no more: the operator runs as the chart's
ServiceAccount, with a token minted through TokenRequest, through a full reconcile
(status, Events, peering, an alert Secret in an allowed namespace) without a single
Forbidden; a budget naming a Secret elsewhere is told so on its condition; people bound
to budgetguard-view read and cannot change, those bound to budgetguard-edit change
only where they are bound."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer, OperatorProcess, RedisServer
from tests.fixtures.chart import CHART, KUBE_VERSION, RELEASE, Rendered, helm, kubectl_apply
from tests.fixtures.operator import GROUP, Cluster, alert_receiver, eventually
from tests.fixtures.webhook import enforced_by, start_webhook

pytestmark = [pytest.mark.kube, pytest.mark.redis]

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
CHAT = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
# Kopf and the kubernetes client say one of these when the API server refuses a call.
REFUSALS = ("Forbidden", "forbidden", "403", "Not enough permissions")


@dataclass(frozen=True)
class Installed:
    """The chart's ServiceAccounts and RBAC applied for real, in fresh namespaces."""

    fullname: str  # the chart's object name prefix
    release_namespace: str
    alert_namespace: str
    team_namespace: str  # where the tests' budgets live
    operator_args: list[str]
    namespaced: bool  # operator.watchNamespaces names the team's namespace

    @property
    def operator(self) -> str:
        return f"{self.fullname}-operator"


def _fresh(kube: KubeAPIServer, prefix: str) -> str:
    return Cluster.fresh(kube, prefix).namespace


@pytest.fixture(scope="module", params=["cluster-wide", "namespaced"])
def installed(
    request: pytest.FixtureRequest, crds: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    """The chart's defaults (every namespace), and with operator.watchNamespaces; each
    its own release, so that their cluster-wide objects do not overlap."""
    namespaced = request.param == "namespaced"
    release = "watching" if namespaced else RELEASE
    release_namespace = _fresh(crds, "guard")
    alert_namespace = _fresh(crds, "alerts")
    team_namespace = _fresh(crds, "team")
    operator_values: dict[str, Any] = {"alertSecretNamespaces": [alert_namespace]}
    if namespaced:
        operator_values["watchNamespaces"] = [team_namespace]
    values = tmp_path_factory.mktemp("rbac") / "values.yaml"
    values.write_text(yaml.safe_dump({"operator": operator_values}))
    result = helm(
        crds.binaries,
        "template",
        release,
        str(CHART),
        "--namespace",
        release_namespace,
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(values),
    )
    assert result.returncode == 0, result.stderr
    rendered = Rendered.parse(result.stdout)
    applied = kubectl_apply(crds, rendered.yaml_of(rendered.of_kind(*RBAC_KINDS)))
    assert applied.returncode == 0, applied.stderr
    fullname = f"{release}-llm-budget-guard" if namespaced else release
    args = rendered.container(f"{fullname}-operator")["args"]
    return Installed(
        fullname,
        release_namespace,
        alert_namespace,
        team_namespace,
        args,
        namespaced,
    )


def kubeconfig_for(kube: KubeAPIServer, namespace: str, account: str, where: Path) -> Path:
    token = kube.mint_service_account_token(namespace, account)
    return kube.write_kubeconfig(where / f"{account}.kubeconfig", token, account)


def local_args(chart_args: list[str], redis_url: str) -> list[str]:
    """The chart's operator flags, less the listeners a pod would bind, on loopback instead."""
    kept = [arg for arg in chart_args[1:] if not arg.startswith(("--liveness", "--metrics"))]
    return [
        *kept,
        "--redis-url",
        redis_url,
        "--sync-interval-seconds",
        "1",
        "--peering-lifetime-seconds",
        "10",
        "--metrics-address",
        "127.0.0.1:0",
    ]


@pytest.fixture
def operator_as_its_account(
    installed: Installed, crds: KubeAPIServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[OperatorProcess]:
    kubeconfig = kubeconfig_for(crds, installed.release_namespace, installed.operator, tmp_path)
    process = OperatorProcess(
        local_args(installed.operator_args, redis_server.url),
        {"KUBECONFIG": str(kubeconfig)},
        tmp_path / "operator",
    )
    with process:
        yield process


def refusals(process: OperatorProcess) -> list[str]:
    return [line for line in process.log_lines() if any(word in line for word in REFUSALS)]


async def test_the_operator_reconciles_as_its_service_account_without_a_forbidden(
    installed: Installed,
    crds: KubeAPIServer,
    redis_server: RedisServer,
    redis_client: Redis,
    operator_as_its_account: OperatorProcess,
    tmp_path: Path,
) -> None:
    team = Cluster(crds, installed.team_namespace)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    alerts = Cluster(crds, installed.alert_namespace)
    async with alert_receiver() as receiver:
        alerts.secret("slack", {"url": receiver.url})
        allowed_ref = {"name": "slack", "namespace": installed.alert_namespace}
        team.budget(
            "allowed",
            "1.00",
            scope={"tenant": tenant},
            thresholds=[50],
            alerts={"secretRef": allowed_ref},
        )
        team.budget(
            "elsewhere",
            "1.00",
            scope={"tenant": f"{tenant}-2"},
            alerts={"secretRef": {"name": "slack"}},  # in the budget's own namespace
        )
        team.create(
            "BurstBudget",
            "launch",
            {
                "budgetRef": {"name": "allowed"},
                "amount": "0.50",
                "validFrom": "2026-01-01T00:00:00Z",
                "validUntil": "2030-01-01T00:00:00Z",
                "approvedBy": "cfo@example.com",
            },
        )
        team.budget("seats", "1.00", scope={"tenant": f"{tenant}-3", "user": "*"})
        for name in ("allowed", "elsewhere", "seats"):
            await eventually(
                lambda name=name: team.condition("llmbudgets", name, "Ready"),
                lambda cond: cond.get("status") == "True",
                what=f"{name} Ready",
            )
        refused = await eventually(
            lambda: team.condition("llmbudgets", "elsewhere", "AlertsReady"),
            lambda cond: cond.get("reason") == "SecretNamespaceNotAllowed",
            what="AlertsReady says the Secret's namespace is not allowed",
        )
        assert refused["status"] == "False"
        assert f"Secret {team.namespace}/slack" in refused["message"]
        assert installed.alert_namespace in refused["message"]
        checkpoint = f"/api/v1/namespaces/{team.namespace}/configmaps/seats.spend"
        await eventually(  # the per-user spend checkpoint, written as the operator's account
            lambda: crds.request("GET", checkpoint)[0],
            lambda status: status == 200,
            what="the checkpoint ConfigMap of a per-user template",
        )
        await eventually(
            lambda: team.condition("burstbudgets", "launch", "Accepted"),
            lambda cond: cond.get("status") == "True",
            what="the burst pool Accepted",
        )

        async with start_webhook(tmp_path, redis_server.url, standalone=False, flush=False) as wh:
            await enforced_by(wh, "allowed")  # what the operator published
            headers = {"x-budget-tenant": tenant, "x-request-id": "rbac-1"}
            answer = await wh.check(CHAT, headers=headers)
            assert answer.status == 200, answer.body
            settled = await wh.settle({"request_id": "rbac-1", "cost_usd": "0.60"})
            assert settled.status == 200, settled.body
            await eventually(
                lambda: team.reasons("allowed"),
                lambda reasons: "SoftLimitReached" in reasons,
                what="a SoftLimitReached Event, posted as the operator's account",
            )
            await eventually(
                receiver.reasons,
                lambda got: got == ["SoftLimitReached"],
                what="the alert, sent to the URL in the allowed namespace's Secret",
            )
    peerings = (
        f"namespaces/{team.namespace}/kopfpeerings"
        if installed.namespaced
        else "clusterkopfpeerings"
    )
    status, peering = crds.request("GET", f"/apis/kopf.dev/v1/{peerings}/llm-budget-guard")
    assert status == 200 and peering.get("status"), peering  # the replica announced itself
    assert refusals(operator_as_its_account) == []


def test_the_operator_account_reads_secrets_only_in_alert_namespaces(
    installed: Installed, crds: KubeAPIServer
) -> None:
    token = crds.mint_service_account_token(installed.release_namespace, installed.operator)
    allowed = f"/api/v1/namespaces/{installed.alert_namespace}/secrets/anything"
    assert crds.request("GET", allowed, token=token)[0] == 404  # may look: there is none
    for namespace in (installed.release_namespace, "default", "kube-system"):
        path = f"/api/v1/namespaces/{namespace}/secrets"
        assert crds.request("GET", path, token=token)[0] == 403


def _person(kube: KubeAPIServer, namespace: str, role: str) -> str:
    """A ServiceAccount standing for a person, bound to ``role`` in ``namespace``."""
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    assert (
        kube.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}}
        )[0]
        == 201
    )
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    assert kube.request("POST", path, binding)[0] == 201
    return kube.mint_service_account_token(namespace, name)


def test_a_viewer_lists_budgets_and_cannot_change_them(
    installed: Installed, crds: KubeAPIServer
) -> None:
    team = Cluster.fresh(crds, "view")
    team.budget("acme", "5.00", scope={"tenant": "acme"})
    token = _person(crds, team.namespace, "budgetguard-view")
    budgets = f"{GROUP}/namespaces/{team.namespace}/llmbudgets"
    status, listed = crds.request("GET", budgets, token=token)
    assert status == 200
    assert [item["metadata"]["name"] for item in listed["items"]] == ["acme"]
    assert crds.request("GET", f"{budgets}/acme", token=token)[0] == 200
    assert crds.request("DELETE", f"{budgets}/acme", token=token)[0] == 403
    replacement = {**listed["items"][0], "spec": {"limit": "500.00"}}
    assert crds.request("PUT", f"{budgets}/acme", replacement, token=token)[0] == 403
    new = {"apiVersion": "budgetguard.io/v1alpha1", "kind": "LLMBudget"}
    new |= {"metadata": {"name": "mine"}, "spec": {"limit": "1"}}
    assert crds.request("POST", budgets, new, token=token)[0] == 403


def test_an_editor_changes_budgets_only_where_bound(
    installed: Installed, crds: KubeAPIServer
) -> None:
    team = Cluster.fresh(crds, "edit")
    other = Cluster.fresh(crds, "other")
    token = _person(crds, team.namespace, "budgetguard-edit")
    new = {"apiVersion": "budgetguard.io/v1alpha1", "kind": "LLMBudget"}
    new |= {"metadata": {"name": "mine"}, "spec": {"limit": "1"}}
    assert (
        crds.request("POST", f"{GROUP}/namespaces/{team.namespace}/llmbudgets", new, token=token)[0]
        == 201
    )
    assert (
        crds.request("POST", f"{GROUP}/namespaces/{other.namespace}/llmbudgets", new, token=token)[
            0
        ]
        == 403
    )
    mine = f"{GROUP}/namespaces/{team.namespace}/llmbudgets/mine"
    status, stored = crds.request("GET", mine, token=token)
    assert status == 200
    # The status is the operator's to write.
    assert crds.request("PUT", f"{mine}/status", {**stored, "status": {}}, token=token)[0] == 403


# -- impersonation: the API server's own RBAC decides, as for a person's kubectl --------


def _as(kube: KubeAPIServer, who: str, *args: str, stdin: str | None = None) -> str:
    """kubectl as ``who`` (impersonated by the admin); "allowed" or the refusal."""
    command = [str(kube.binaries.kubectl), f"--kubeconfig={kube.kubeconfig_path}", "--as", who]
    done = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode == 0:
        return "allowed"
    assert "Forbidden" in done.stderr or "forbidden" in done.stderr, done.stderr
    return "forbidden"


def _manifest(kind: str, name: str, spec: dict[str, Any]) -> str:
    body = {"apiVersion": "budgetguard.io/v1alpha1", "kind": kind, "metadata": {"name": name}}
    return yaml.safe_dump({**body, "spec": spec})


BURST = {
    "budgetRef": {"name": "shared"},
    "amount": "1000",
    "validFrom": "2026-01-01T00:00:00Z",
    "validUntil": "2030-01-01T00:00:00Z",
    "approvedBy": "me@example.com",
}


def test_an_impersonated_editor_of_one_namespace_cannot_touch_budgets_in_another(
    installed: Installed, crds: KubeAPIServer
) -> None:
    team = Cluster.fresh(crds, "mine")
    other = Cluster.fresh(crds, "theirs")
    other.budget("shared", "10.00", scope={"tenant": "theirs"})
    user = f"alice-{uuid.uuid4().hex[:6]}"
    binding = {
        "metadata": {"name": user},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "budgetguard-edit",
        },
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
    }
    bindings = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{team.namespace}/rolebindings"
    assert crds.request("POST", bindings, binding)[0] == 201
    mine, theirs = ("-n", team.namespace), ("-n", other.namespace)
    raise_limit = ("--type", "merge", "-p", '{"spec": {"limit": "1000000"}}')
    budget = _manifest("LLMBudget", "shared", {"limit": "1000000"})

    # where bound: everything an editor does
    assert _as(crds, user, "create", *mine, "-f", "-", stdin=budget) == "allowed"
    assert _as(crds, user, "patch", "llmbudget", "shared", *mine, *raise_limit) == "allowed"
    assert _as(
        crds, user, "create", *mine, "-f", "-", stdin=_manifest("BurstBudget", "b", BURST)
    ) == ("allowed")
    # elsewhere: nothing, not even a look
    attempts = {
        "get": ("get", "llmbudget", "shared", *theirs),
        "list": ("get", "llmbudgets", *theirs),
        "list everywhere": ("get", "llmbudgets", "--all-namespaces"),
        "create": ("create", *theirs, "-f", "-"),
        "patch": ("patch", "llmbudget", "shared", *theirs, *raise_limit),
        "replace": ("replace", *theirs, "-f", "-"),
        "patch status": (
            "patch",
            "llmbudget",
            "shared",
            *theirs,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            '{"status": {"spentUsd": "0"}}',
        ),
        "delete": ("delete", "llmbudget", "shared", *theirs),
        "delete all": ("delete", "llmbudgets", "--all", *theirs),
        "burst": ("create", *theirs, "-f", "-"),
        "bind itself there": (
            "create",
            "rolebinding",
            "x",
            "--clusterrole=budgetguard-edit",
            f"--user={user}",
            *theirs,
        ),
        "bind itself here": (
            "create",
            "rolebinding",
            "x",
            "--clusterrole=admin",
            f"--user={user}",
            *mine,
        ),
    }
    stdin = {"create": budget, "replace": budget, "burst": _manifest("BurstBudget", "b", BURST)}
    outcomes = {
        name: _as(crds, user, *args, stdin=stdin.get(name)) for name, args in attempts.items()
    }
    assert outcomes == dict.fromkeys(attempts, "forbidden")
    # and the budget there is as it was
    shared = other.get("llmbudgets", "shared")
    assert shared is not None and shared["spec"]["limit"] == "10.00"
    assert other.get("burstbudgets", "b") is None


def test_the_impersonated_operator_account_reads_no_secret_outside_its_namespaces(
    installed: Installed, crds: KubeAPIServer
) -> None:
    team = Cluster(crds, installed.team_namespace)
    theirs, ours = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("not-yours", "alerting"))
    team.secret(theirs, {"url": "https://hooks.example.com/secret"})
    Cluster(crds, installed.alert_namespace).secret(ours, {"url": "https://hooks.example.com/ok"})
    operator = f"system:serviceaccount:{installed.release_namespace}:{installed.operator}"
    in_alerts = ("-n", installed.alert_namespace)
    assert _as(crds, operator, "get", "secret", ours, *in_alerts) == "allowed"
    refused = {
        "list in the alert namespace": ("get", "secrets", *in_alerts),
        "watch in the alert namespace": (
            "get",
            "secrets",
            *in_alerts,
            "--watch-only",
            "--request-timeout=2s",
        ),
        "a team's Secret": ("get", "secret", theirs, "-n", installed.team_namespace),
        "list a team's": ("get", "secrets", "-n", installed.team_namespace),
        "its own namespace": ("get", "secrets", "-n", installed.release_namespace),
        "kube-system": ("get", "secrets", "-n", "kube-system"),
        "every namespace": ("get", "secrets", "--all-namespaces"),
        "change one": ("delete", "secret", ours, *in_alerts),
    }
    outcomes = {name: _as(crds, operator, *args) for name, args in refused.items()}
    assert outcomes == dict.fromkeys(refused, "forbidden")
