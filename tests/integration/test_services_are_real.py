"""Smoke tests proving the session's services are real processes, not mocks."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
import redis

from budget_guard.localservices import KubeAPIServer, RedisServer


@pytest.mark.redis
def test_redis_round_trip(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    key = f"smoke:{uuid.uuid4()}"
    client.set(key, "real")
    assert client.get(key) == b"real"
    assert client.info("server")["process_id"] == redis_server.pid
    assert redis_server.port != 6379


@pytest.mark.kube
def test_namespace_and_configmap_round_trip(kube_api: KubeAPIServer) -> None:
    namespace = f"smoke-{uuid.uuid4().hex[:8]}"
    status, _ = kube_api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    assert status == 201
    config_map = {"metadata": {"name": "greeting"}, "data": {"hello": "world"}}
    status, _ = kube_api.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", config_map)
    assert status == 201
    status, stored = kube_api.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/greeting")
    assert status == 200
    assert stored["data"] == {"hello": "world"}


@pytest.mark.kube
def test_kubectl_reports_the_pinned_server_version(kube_api: KubeAPIServer) -> None:
    pinned = os.environ.get("BUDGET_GUARD_KUBE_VERSION")
    assert pinned, "make test exports the pinned Kubernetes version"
    result = kube_api.kubectl("version", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert f'"gitVersion": "{pinned}"' in result.stdout.replace('":"', '": "')
    assert kube_api.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


@pytest.mark.kube
def test_service_account_without_grants_is_forbidden(kube_api: KubeAPIServer) -> None:
    namespace = f"rbac-{uuid.uuid4().hex[:8]}"
    assert (
        kube_api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})[0] == 201
    )
    service_account = {"metadata": {"name": "nobody"}}
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    assert kube_api.request("POST", path, service_account)[0] == 201

    token = kube_api.mint_service_account_token(namespace, "nobody")
    status, answer = kube_api.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps", token=token
    )
    assert status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in answer["message"]


@pytest.mark.kube
def test_helm_runs(kube_api: KubeAPIServer) -> None:
    result = subprocess.run(
        [str(kube_api.binaries.helm), "version", "--short"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(os.environ["BUDGET_GUARD_HELM_VERSION"])
