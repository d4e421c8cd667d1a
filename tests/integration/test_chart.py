"""The Helm chart: it lints, renders with defaults and with every optional part on, every
object it renders is accepted by the real API server, its CRDs are the repository's,
its values are documented and typos refused, and it runs the components with flags
and ports they really have."""

from __future__ import annotations

import filecmp
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from budget_guard.cli import build_parser
from budget_guard.localservices import KubeAPIServer, KubeBinaries
from budget_guard.operator.settings import OperatorSettings
from budget_guard.operator.settings import build_parser as operator_parser
from budget_guard.options import env_name
from budget_guard.webhook.settings import ListenSettings, WebhookSettings
from budget_guard.webhook.settings import build_parser as webhook_parser
from tests.fixtures.chart import (
    ALERT_NAMESPACE,
    ALL_ON,
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    WATCHED_NAMESPACE,
    Rendered,
    ensure_namespaces,
    helm,
    kubectl_apply,
    render,
)

pytestmark = pytest.mark.kube

WEBHOOK = f"{RELEASE}-webhook"
OPERATOR = f"{RELEASE}-operator"


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_helm_lint_passes(
    kube_binaries: KubeBinaries, tmp_path: Path, values: dict[str, Any]
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm(
        kube_binaries,
        "lint",
        "--strict",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(values_file),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_the_components_and_nothing_optional(chart_defaults: Rendered) -> None:
    kinds = sorted({obj["kind"] for obj in chart_defaults.objects})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    operator = chart_defaults.one("Deployment", OPERATOR)
    assert operator["spec"]["replicas"] == 2
    assert "--standalone" not in chart_defaults.container(OPERATOR)["args"]  # Kopf peering
    crd = chart_defaults.one("CustomResourceDefinition", "llmbudgets.budgetguard.io")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_every_optional_part_renders(chart_all_on: Rendered) -> None:
    kinds = {obj["kind"] for obj in chart_all_on.objects}
    assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    assert chart_all_on.one("Deployment", f"{RELEASE}-redis")
    for name in (WEBHOOK, OPERATOR):  # redis.tlsSecret: the CA for rediss:// URLs
        pod = chart_all_on.one("Deployment", name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["redis-tls"]["secret"]["secretName"] == "redis-tls"
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["redis-tls"]["mountPath"] == "/etc/budget-guard/redis-tls"
    waves = {
        obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave")
        for obj in chart_all_on.objects
    }
    assert waves == {"-2", "-1", "0"}
    for crd in chart_all_on.of_kind("CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-2"


def test_crds_can_be_left_out_or_let_go(kube_binaries: KubeBinaries, tmp_path: Path) -> None:
    left_out = render(kube_binaries, {"crds": {"enabled": False}}, tmp_path)
    assert "CustomResourceDefinition" not in left_out.stdout
    not_kept = render(kube_binaries, {"crds": {"keep": False}}, tmp_path)
    assert "kind: CustomResourceDefinition" in not_kept.stdout
    assert "helm.sh/resource-policy" not in not_kept.stdout


def test_every_rendered_object_is_accepted_by_the_api_server(
    chart_defaults: Rendered,
    chart_all_on: Rendered,
    monitoring_crds: KubeAPIServer,
) -> None:
    ensure_namespaces(monitoring_crds, [NAMESPACE, ALERT_NAMESPACE, WATCHED_NAMESPACE])
    for rendered in (chart_defaults, chart_all_on):
        result = kubectl_apply(monitoring_crds, rendered.text, "--dry-run=server")
        assert result.returncode == 0, result.stderr
        accepted = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
        assert len(accepted) == len(rendered.objects), result.stdout


def test_the_chart_crds_are_the_repository_crds(chart_defaults: Rendered) -> None:
    """`make crds` writes both; this fails when one was edited by hand or not regenerated."""
    repository = ROOT / "crds"
    copies = CHART / "files" / "crds"
    names = sorted(path.name for path in repository.glob("*.yaml"))
    assert sorted(path.name for path in copies.glob("*.yaml")) == names, "run make crds"
    _, mismatch, errors = filecmp.cmpfiles(repository, copies, names, shallow=False)
    assert mismatch == errors == [], f"{mismatch + errors} differ from crds/: run make crds"
    rendered = {
        crd["metadata"]["name"]: crd for crd in chart_defaults.of_kind("CustomResourceDefinition")
    }
    for name in names:
        committed = yaml.safe_load((repository / name).read_text())
        assert rendered[committed["metadata"]["name"]]["spec"] == committed["spec"]


def test_a_typo_in_the_values_is_refused(kube_binaries: KubeBinaries, tmp_path: Path) -> None:
    result = render(kube_binaries, {"webhook": {"replicaz": 3}}, tmp_path)
    assert result.returncode != 0
    assert "additional properties 'replicaz' not allowed" in result.stderr


def _keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        keys.add(path)
        if isinstance(value, dict) and value:
            keys |= _keys(value, path + ".")
    return keys


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, child in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        keys.add(path)
        if "properties" in child:
            assert child.get("additionalProperties") is False, f"{path} accepts unknown keys"
            keys |= _schema_keys(child, path + ".")
    return keys


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_][\w.-]*:", line):
            previous = lines[number - 1].strip()
            assert previous.startswith("#"), f"values.yaml line {number + 1} is not documented"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema.get("additionalProperties") is False
    values = yaml.safe_load(text)
    free_form = {  # maps passed through to Kubernetes objects as they are
        key
        for key in _keys(values)
        if key.endswith(("resources", "SecurityContext", ".labels", ".table"))
    }
    declared = _schema_keys(schema)
    assert {k for k in _keys(values) if not k.startswith(tuple(f + "." for f in free_form))} == (
        declared
    )


def _options(parser: Any) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_the_webhook_runs_with_its_real_flags_and_ports(
    chart_defaults: Rendered, chart_all_on: Rendered
) -> None:
    defaults = ListenSettings()
    for rendered in (chart_defaults, chart_all_on):
        container = rendered.container(WEBHOOK)
        args = container["args"]
        assert args[0] == "webhook"
        settings = WebhookSettings.from_namespace(build_parser().parse_args(args))
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {
            "check": defaults.check_port,
            "api": defaults.api_port,
            "grpc": defaults.ext_proc_port,
        }
        assert (settings.listen.check_port, settings.listen.api_port) == (8080, 8081)
        service = rendered.one("Service", WEBHOOK)
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
        _assert_env_is_options(container, "webhook")
        probe = container["readinessProbe"]["httpGet"]
        assert (probe["path"], probe["port"]) == ("/readyz", "api")
    jwt = WebhookSettings.from_namespace(
        build_parser().parse_args(chart_all_on.container(WEBHOOK)["args"])
    )
    assert jwt.identity.mode == "jwt"
    assert jwt.identity.jwt.audience == "llm-gateway"
    assert jwt.config.pricing_file is not None


def test_the_operator_runs_with_its_real_flags_and_ports(chart_all_on: Rendered) -> None:
    container = chart_all_on.container(OPERATOR)
    args = container["args"]
    assert args[0] == "operator"
    settings = OperatorSettings.from_namespace(build_parser().parse_args(args))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert settings.metrics_address == f"0.0.0.0:{ports['metrics']}"
    assert settings.liveness_endpoint == f"http://0.0.0.0:{ports['health']}/healthz"
    assert settings.alert_secret_namespaces == (ALERT_NAMESPACE, NAMESPACE)
    assert settings.namespaces == (WATCHED_NAMESPACE,)
    assert not settings.standalone
    _assert_env_is_options(container, "operator")


def _assert_env_is_options(container: dict[str, Any], command: str) -> None:
    parser = webhook_parser() if command == "webhook" else operator_parser()
    known = {env_name(flag) for flag in _options(parser) if flag.startswith("--")}
    names = {env["name"] for env in container["env"] if env["name"].startswith("BUDGET_GUARD_")}
    assert names and names <= known, names - known


def test_the_webhook_holds_no_kubernetes_credentials(chart_defaults: Rendered) -> None:
    pod = chart_defaults.one("Deployment", WEBHOOK)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    for deployment in (WEBHOOK, OPERATOR):
        context = chart_defaults.container(deployment)["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}


def test_the_network_policies_admit_only_the_named_namespaces(chart_all_on: Rendered) -> None:
    policy = chart_all_on.one("NetworkPolicy", WEBHOOK)["spec"]
    admitted = {
        rule["ports"][0]["port"]: rule["from"][0]["namespaceSelector"]["matchExpressions"][0][
            "values"
        ]
        for rule in policy["ingress"]
    }
    assert admitted == {
        "check": ["istio-system", "envoy-gateway-system"],
        "api": ["monitoring", "apps"],
    }


def test_notes_tell_the_next_steps_and_warn_about_the_evaluation_redis(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    ensure_namespaces(kube_api, [NAMESPACE])
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"redis": {"evaluation": {"enabled": True}}}))
    result = helm(
        kube_api.binaries,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=server",
        "--values",
        str(values),
        kubeconfig=kube_api.kubeconfig_path,
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "WARNING: redis.evaluation.enabled is on" in notes
    for step in ("1. Declare a budget", "2. Send your gateway's", "3. Settle actual usage"):
        assert step in notes
    assert f"{WEBHOOK}.{NAMESPACE}.svc.cluster.local:8080, path prefix /check" in notes


def _service_host(rendered: Rendered) -> str:
    service = rendered.one("Service", WEBHOOK)["metadata"]
    return f"{service['name']}.{service['namespace']}.svc.cluster.local"


def test_the_gateway_examples_call_the_charts_service(chart_defaults: Rendered) -> None:
    host = _service_host(chart_defaults)
    envoy = yaml.safe_load((ROOT / "examples/envoy/envoy.yaml").read_text())
    (cluster,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "budget_guard"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": host, "port_value": 8080}
    manager = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (authz,) = [
        f["typed_config"]
        for f in manager["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.ext_authz"
    ]
    assert authz["http_service"]["path_prefix"] == "/check"

    mesh = yaml.safe_load((ROOT / "examples/istio/mesh-config.yaml").read_text())
    provider = mesh["spec"]["meshConfig"]["extensionProviders"][0]["envoyExtAuthzHttp"]
    assert (provider["service"], provider["port"], provider["pathPrefix"]) == (
        host,
        8080,
        "/check",
    )

    documents = yaml.safe_load_all(
        (ROOT / "examples/envoy-gateway/security-policy.yaml").read_text()
    )
    (policy,) = [d for d in documents if d["kind"] == "SecurityPolicy"]
    http = policy["spec"]["extAuth"]["http"]
    assert http["backendRefs"] == [{"name": WEBHOOK, "namespace": NAMESPACE, "port": 8080}]
    assert http["path"] == "/check"


def test_the_design_brief_budgets_apply_after_their_namespaces(crds: KubeAPIServer) -> None:
    namespaces = crds.kubectl("apply", "-f", str(ROOT / "examples/argocd/namespaces"))
    assert namespaces.returncode == 0, namespaces.stderr
    # A server-side dry run: the API server judges every budget (schema, CEL rules) and
    # keeps none, so the operators of other tests never see them.
    applied = crds.kubectl("apply", "--dry-run=server", "-f", str(ROOT / "examples/budgets"))
    assert applied.returncode == 0, applied.stderr
    for name in (
        "llmbudget.budgetguard.io/initech-monthly",
        "burstbudget.budgetguard.io/black-friday",
    ):
        assert f"{name} created (server dry run)" in applied.stdout


def test_kubectl_explain_describes_spec_and_status(crds: KubeAPIServer) -> None:
    wanted = {
        "llmbudget.spec.failureMode": "When the ledger (Redis) cannot be reached",
        "llmbudget.status.resetsAt": "When the current period ends",
        "llmbudget.status.conditions.reason": "A CamelCase word",
        "burstbudget.status.review.peakDay": "The day (YYYY-MM-DD)",
    }
    for field, text in wanted.items():
        for _ in range(50):  # the API server publishes a new CRD's OpenAPI within seconds
            explained = crds.kubectl("explain", field)
            if text in explained.stdout:
                break
            time.sleep(0.2)
        assert text in explained.stdout, explained.stdout + explained.stderr


def test_the_chart_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (ROOT / "charts" / "README.md").read_text()
    values_section = readme.split("## Values", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w.]+)` \|", values_section, re.M))
    free_form = ("resources", "SecurityContext", "dashboard.labels")
    expected = set()
    for key in _keys(values):
        parts = key.split(".")
        if any(".".join(parts[:i]).endswith(free_form) for i in range(1, len(parts))):
            continue  # inside a structure listed whole
        value = values
        for part in parts:
            value = value[part]
        if key.endswith(free_form) or not (isinstance(value, dict) and value):
            expected.add(key)
    assert listed == expected


def test_tenant_tokens_are_mounted_where_the_flag_reads_them(
    chart_defaults: Rendered, chart_all_on: Rendered
) -> None:
    default_args = chart_defaults.container(WEBHOOK)["args"]
    assert not any(arg.startswith("--api-tokens") for arg in default_args)
    container = chart_all_on.container(WEBHOOK)
    settings = WebhookSettings.from_namespace(build_parser().parse_args(container["args"]))
    assert settings.api_tokens is not None
    assert settings.usage_token_file is not None  # the shared admin token stays
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-tokens"]
    assert Path(mount["mountPath"]) == settings.api_tokens
    pod = chart_all_on.one("Deployment", WEBHOOK)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-tokens"]
    files = {
        (source["secret"]["name"], item["key"]): item["path"]
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    assert files == {  # the directory form of --api-tokens: one directory per Secret
        ("acme-api-token", "token"): "acme-api-token/token",
        ("acme-api-token", "tenants"): "acme-api-token/tenants",
        ("ops-api-token", "token"): "ops-api-token/token",
        ("ops-api-token", "tenants"): "ops-api-token/tenants",
        ("api-tokens", "tokens.yaml"): "tokens.yaml",
    }


def _journal_of(rendered: Rendered) -> tuple[WebhookSettings, dict[str, Any] | None]:
    """The webhook's settings and the volume mounted at its --journal-dir, if any."""
    container = rendered.container(WEBHOOK)
    settings = WebhookSettings.from_namespace(build_parser().parse_args(container["args"]))
    pod = rendered.one("Deployment", WEBHOOK)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if settings.journal_dir is None:
        assert "journal" not in volumes
        return settings, None
    return settings, volumes[mounts[str(settings.journal_dir)]]


def test_the_fail_open_journal_is_on_a_volume(
    kube_binaries: KubeBinaries, chart_defaults: Rendered, tmp_path: Path
) -> None:
    _, volume = _journal_of(chart_defaults)
    assert volume is not None and volume["emptyDir"] == {"sizeLimit": "64Mi"}
    claim = render(kube_binaries, {"webhook": {"journal": {"existingClaim": "journals"}}}, tmp_path)
    assert claim.returncode == 0, claim.stderr
    _, volume = _journal_of(Rendered.parse(claim.stdout))
    assert volume is not None and volume["persistentVolumeClaim"] == {"claimName": "journals"}
    off = render(kube_binaries, {"webhook": {"journal": {"enabled": False}}}, tmp_path)
    assert off.returncode == 0, off.stderr
    settings, volume = _journal_of(Rendered.parse(off.stdout))
    assert settings.journal_dir is None and volume is None
