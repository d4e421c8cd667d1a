"""The chart's observability pack: promtool checks and unit-tests the alerts (each one
fires and stays silent on the right series), and every metric the Grafana dashboard and
the alerts query is in a real /metrics scrape of a running webhook and operator."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from budget_guard.localservices import KubeAPIServer, RedisServer
from tests.fixtures.chart import RELEASE, ROOT, Rendered
from tests.fixtures.operator import Cluster, eventually, running_operator
from tests.fixtures.webhook import start_webhook

RULES_TEST = ROOT / "tests" / "data" / "prometheus-rules-test.yaml"
CHAT = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
# The sample names each metric type exposes (prometheus_client's text format).
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def rules(rendered: Rendered) -> dict[str, Any]:
    (rule,) = rendered.of_kind("PrometheusRule")
    return dict(rule["spec"])


def alerts(rendered: Rendered) -> list[dict[str, Any]]:
    return [rule for group in rules(rendered)["groups"] for rule in group["rules"]]


def promtool_run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_is_the_pinned_version(promtool: Path) -> None:
    result = promtool_run(promtool, "--version")
    pinned = os.environ.get("BUDGET_GUARD_PROMETHEUS_VERSION", "")
    assert pinned, "make test exports the pinned Prometheus version"
    assert f"version {pinned.removeprefix('v')}" in result.stdout


def test_promtool_checks_and_unit_tests_the_alerts(
    chart_all_on: Rendered, promtool: Path, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules(chart_all_on), sort_keys=False))
    shutil.copy(RULES_TEST, tmp_path / "rules-test.yaml")
    checked = promtool_run(promtool, "check", "rules", str(tmp_path / "rules.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts(chart_all_on))} rules found" in checked.stdout
    tested = promtool_run(promtool, "test", "rules", str(tmp_path / "rules-test.yaml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_silent(chart_all_on: Rendered) -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = {alert["alert"] for alert in alerts(chart_all_on)}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


def exposed(exposition: str) -> set[str]:
    """Every sample name a scrape exposes, also for families without samples yet."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ())}
    return names


def queried(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {name for name in names if name not in PROMQL_WORDS}


def dashboard(rendered: Rendered) -> dict[str, Any]:
    config_map = rendered.one("ConfigMap", f"{RELEASE}-dashboard")
    return dict(json.loads(config_map["data"]["llm-budget-guard.json"]))


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"label_values\((.*),\s*\w+\)$", r"\1", variable["definition"]))
    return exprs


def test_the_query_reader_finds_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(budget_guard_decision_seconds_bucket{pod="a"}'
        "[$__rate_interval]))) > 0.04 or vector(0) and on (pod) budget_guard_ledger_up"
    )
    assert queried(expr) == {"budget_guard_decision_seconds_bucket", "budget_guard_ledger_up"}


def test_the_dashboard_shows_what_the_issue_asks(chart_all_on: Rendered) -> None:
    board = dashboard(chart_all_on)
    titles = {panel["title"]: panel for panel in board["panels"]}
    burn_up = " ".join(t["expr"] for t in titles["Spend against limit (burn-up)"]["targets"])
    assert "budget_guard_budget_spent_usd" in burn_up and "budget_guard_budget_limit_usd" in burn_up
    latency = [t["expr"] for t in titles["Decision latency"]["targets"]]
    assert [expr.split(",")[0] for expr in latency] == [
        "histogram_quantile(0.50",
        "histogram_quantile(0.99",
    ]
    assert "budget_guard_decisions_total" in titles["Decisions by outcome"]["targets"][0]["expr"]
    assert "budget_guard_fail_open_total" in json.dumps(
        titles["Fail-open rate and ledger errors"]["targets"]
    )


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


@pytest.mark.kube
@pytest.mark.redis
async def test_dashboard_and_alerts_query_only_metrics_the_components_expose(
    chart_all_on: Rendered,
    crds: KubeAPIServer,
    redis_server: RedisServer,
    redis_client: Redis,
    tmp_path: Path,
) -> None:
    cluster = Cluster.fresh(crds, "obs")
    cluster.budget("acme", "1.00", scope={"tenant": "acme"})
    extra = ("--metrics-address", "127.0.0.1:0")
    with running_operator(cluster, redis_server.url, tmp_path / "op", *extra) as operator:
        await eventually(
            lambda: cluster.condition("llmbudgets", "acme", "Ready").get("status"),
            lambda status: status == "True",
            what="acme Ready",
        )
        operator_url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        acme_limit = f'budget_guard_budget_limit_usd{{budget="{cluster.namespace}/acme",'
        # The status is written just before the metrics are updated.
        operator_text = await eventually(
            lambda: scrape(operator_url),
            lambda text: acme_limit in text,
            what="the operator's metrics for acme",
        )
        assert f'{acme_limit}kind="LLMBudget"}} 1.0' in operator_text
        async with start_webhook(tmp_path, redis_server.url, standalone=False, flush=False) as wh:
            for _ in range(100):
                answer = await wh.check(CHAT, headers={"x-budget-tenant": "acme"})
                if answer.status == 200:
                    break
            assert answer.status == 200, answer.body
            webhook_text = (await wh.api("/metrics")).body.decode()
    names = exposed(operator_text) | exposed(webhook_text)
    assert 'budget_guard_build_info{component="operator"' in operator_text
    assert 'budget_guard_build_info{component="webhook"' in webhook_text
    for expr in dashboard_queries(dashboard(chart_all_on)):
        assert queried(expr) and queried(expr) <= names, expr
    for alert in alerts(chart_all_on):
        assert queried(alert["expr"]) <= names, alert["alert"]
