"""The few Kubernetes API calls the operator makes itself (Kopf makes the rest).

The official client is synchronous: calls run in worker threads so the event loop
never waits on the network. The client gets its own configuration object rather
than the library's process-wide default.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from budget_guard.domain.manifest import API_GROUP, VERSION
from budget_guard.operator.conditions import SECRET_NOT_FOUND

log = logging.getLogger(__name__)

PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"
LIST_PAGE = 500  # resources per page of a paginated list


class SecretMissing(LookupError):
    """The alert URL cannot be read; ``reason`` is the AlertsReady condition's."""

    def __init__(self, message: str, reason: str = SECRET_NOT_FOUND) -> None:
        super().__init__(message)
        self.reason = reason


class KubeUnavailable(ConnectionError):
    """The API server did not answer, or answered that it cannot now (5xx, 429): worth
    trying again. Other refusals (403, 422) are ``ApiException`` as the client raises."""


_NOT_NOW = (urllib3.exceptions.HTTPError, OSError)


def _retryable(error: ApiException) -> bool:
    return error.status is None or error.status == 0 or error.status == 429 or error.status >= 500


def _api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            raise config.ConfigException("a kubeconfig was named")
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # $KUBECONFIG read now: the library reads it once, when first imported.
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG"),
            client_configuration=configuration,
        )
    return client.ApiClient(configuration)


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._client = api_client or _api_client()
        self._custom = client.CustomObjectsApi(self._client)
        self._core = client.CoreV1Api(self._client)

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> KubeApi:
        """A client from ``kubeconfig``, else in-cluster, else $KUBECONFIG or ~/.kube/config."""
        return cls(_api_client(kubeconfig))

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource: the object as written, None if it is gone."""
        try:
            written: Any = await asyncio.to_thread(
                self._custom.patch_namespaced_custom_object_status,
                API_GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
            )
        except ApiException as error:
            if error.status == 404:
                return None
            if _retryable(error):
                raise KubeUnavailable(f"HTTP {error.status}: {error.reason}") from error
            raise
        except _NOT_NOW as error:
            raise KubeUnavailable(f"{type(error).__name__}: {error}") from error
        return written if isinstance(written, dict) else {}

    async def create_event(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create the Event ``body`` names; False if one of that name is there already."""
        try:
            # A plain dict is sent as it is (the typed model would only be serialized back).
            await asyncio.to_thread(self._core.create_namespaced_event, namespace, cast(Any, body))
        except ApiException as error:
            if error.status == 409:
                return False
            if _retryable(error):
                raise KubeUnavailable(f"HTTP {error.status}: {error.reason}") from error
            raise
        except _NOT_NOW as error:
            raise KubeUnavailable(f"{type(error).__name__}: {error}") from error
        return True

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap as JSON, or None if there is none."""
        try:
            response = await asyncio.to_thread(
                self._core.read_namespaced_config_map, name, namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(json.loads(cast(bytes, response.data)))

    async def write_config_map(self, namespace: str, body: dict[str, Any]) -> None:
        """Create the ConfigMap ``body`` names, or replace it if it exists."""
        name = body["metadata"]["name"]
        try:
            await asyncio.to_thread(
                self._core.create_namespaced_config_map, namespace, cast(Any, body)
            )
        except ApiException as error:
            if error.status != 409:
                raise
            await asyncio.to_thread(
                self._core.replace_namespaced_config_map, name, namespace, cast(Any, body)
            )

    async def list_resources(self, plural: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
        """Every resource of a kind, from the API server's watch cache (resourceVersion 0)."""
        if not namespaces:
            return await self._list(
                self._custom.list_cluster_custom_object, API_GROUP, VERSION, plural
            )
        lists = await asyncio.gather(
            *(
                self._list(
                    self._custom.list_namespaced_custom_object,
                    API_GROUP,
                    VERSION,
                    namespace,
                    plural,
                )
                for namespace in namespaces
            )
        )
        return [item for items in lists for item in items]

    async def list_versioned(
        self,
        plural: str,
        namespaces: Sequence[str],
        shrink: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    ) -> list[tuple[str | None, list[dict[str, Any]], int]]:
        """Every resource of a kind, as (namespace or None for all, items, the list's
        resourceVersion), one list per namespace named. Read in pages of ``LIST_PAGE``
        (one consistent snapshot), each item ``shrink``-ed as its page is decoded: ten
        thousand whole objects at once would be the process's peak of memory."""
        if not namespaces:
            everywhere = self._custom.list_cluster_custom_object
            return [(None, *await self._pages(shrink, everywhere, API_GROUP, VERSION, plural))]
        one = self._custom.list_namespaced_custom_object
        lists = await asyncio.gather(
            *(self._pages(shrink, one, API_GROUP, VERSION, ns, plural) for ns in namespaces)
        )
        return [(ns, *listed) for ns, listed in zip(namespaces, lists, strict=True)]

    async def _pages(
        self, shrink: Callable[[dict[str, Any]], dict[str, Any]], call: Any, *args: str
    ) -> tuple[list[dict[str, Any]], int]:
        items: list[dict[str, Any]] = []
        token, version = "", 0
        while True:
            response = await asyncio.to_thread(
                call, *args, limit=LIST_PAGE, _continue=token or None, _preload_content=False
            )
            page = json.loads(response.data)
            items.extend(shrink(item) for item in page["items"])
            version = version or int(page["metadata"].get("resourceVersion") or 0)
            token = page["metadata"].get("continue") or ""
            if not token:
                return items, version

    async def _list(self, call: Any, *args: str) -> list[dict[str, Any]]:
        # Raw JSON: the client's own deserialization costs more than the request.
        try:
            response = await asyncio.to_thread(
                call, *args, resource_version="0", _preload_content=False
            )
        except ApiException as error:
            if _retryable(error):
                raise KubeUnavailable(f"HTTP {error.status}: {error.reason}") from error
            raise
        except _NOT_NOW as error:
            raise KubeUnavailable(f"{type(error).__name__}: {error}") from error
        return list(json.loads(response.data)["items"])

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise SecretMissing(f"Secret {namespace}/{name} does not exist") from None
            if error.status == 403:
                raise SecretMissing(
                    f"the operator may not read Secret {namespace}/{name}: "
                    "grant its ServiceAccount get on secrets"
                ) from None
            raise
        data = (secret.data or {}).get(key)
        if data is None:
            raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data).decode().strip()

    async def ensure_peering(self, name: str, namespaces: Sequence[str]) -> None:
        """Create the peering object(s) replicas meet in, if missing.

        Kopf only touches an existing object: without one, replicas would not see
        each other and all would be active.
        """
        body = {"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}", "metadata": {"name": name}}
        try:
            if not namespaces:
                await asyncio.to_thread(
                    self._custom.create_cluster_custom_object,
                    PEERING_GROUP,
                    PEERING_VERSION,
                    "clusterkopfpeerings",
                    body | {"kind": "ClusterKopfPeering"},
                )
            for namespace in namespaces:
                await self._create_namespaced_peering(namespace, body | {"kind": "KopfPeering"})
        except ApiException as error:
            if error.status == 409:
                return
            if error.status == 404:
                log.error(
                    "the Kopf peering CRDs are not installed (kubectl apply -f crds/): "
                    "the operator stays paused until they are"
                )
                return
            raise

    async def _create_namespaced_peering(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(
                self._custom.create_namespaced_custom_object,
                PEERING_GROUP,
                PEERING_VERSION,
                namespace,
                "kopfpeerings",
                body,
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def close(self) -> None:
        self._client.close()
