"""Every Kopf registration of the operator, in one place; the logic is in ``controller``.

- Indexes keep a trimmed copy of every LLMBudget and BurstBudget: the loop compiles
  them all at once, and Kopf fills them before any handler runs, so the first
  published config already holds every budget.
- Create, update and resume only mark the config dirty; the loop publishes.
- Deletion (through a finalizer) publishes the config without the resource before
  the resource goes; its spend stays in Redis for chargeback.
- A daemon per resource takes turns at running the loop (see ``Controller``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from budget_guard.domain.manifest import API_GROUP
from budget_guard.operator.compile import Manifest
from budget_guard.operator.controller import Controller
from budget_guard.operator.kube import VERSION
from budget_guard.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

KINDS = ("llmbudgets", "burstbudgets")
_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)


def trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the loop needs of a resource: no managedFields, no annotations."""
    metadata = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: metadata[k] for k in _KEPT_METADATA if k in metadata},
        "spec": _plain(body.get("spec", {})),
        "status": _plain(body.get("status", {})),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def manifests(index: kopf.Index[str, Manifest]) -> Iterable[Manifest]:
    return [manifest for store in index.values() for manifest in store]


def controller_of(memo: kopf.Memo) -> Controller:
    return cast(Controller, memo["controller"])


def build_registry(ours: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry, id="start")
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure_kopf(settings, ours)
        controller = Controller.open(ours)
        memo["controller"] = controller
        if not ours.standalone:
            await controller.kube.ensure_peering(ours.peering_name, ours.namespaces)
        log.info(
            "operator started",
            extra={
                "namespaces": list(ours.namespaces) or "all",
                "standalone": ours.standalone,
                "priority": ours.priority,
            },
        )

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        controller = memo.get("controller")
        if controller is not None:
            await controller.close()

    for plural in KINDS:
        _register_kind(registry, plural)
    return registry


def _register_kind(registry: kopf.OperatorRegistry, plural: str) -> None:
    index_id = "budgets" if plural == "llmbudgets" else "bursts"

    @kopf.index(API_GROUP, VERSION, plural, registry=registry, id=index_id)
    def index(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[str, Manifest]:
        return {f"{namespace}/{name}": trimmed(body)}

    @kopf.on.resume(API_GROUP, VERSION, plural, registry=registry, id="resume")
    @kopf.on.create(API_GROUP, VERSION, plural, registry=registry, id="create")
    @kopf.on.update(API_GROUP, VERSION, plural, registry=registry, id="update")
    def mark_dirty(memo: kopf.Memo, **_: Any) -> None:
        controller_of(memo).dirty.set()

    @kopf.on.delete(API_GROUP, VERSION, plural, registry=registry, id="unpublish")
    async def unpublish(namespace: str | None, name: str, memo: Any, **indexes: Any) -> None:
        key = f"{namespace}/{name}"
        budgets, bursts = manifests(indexes["budgets"]), manifests(indexes["bursts"])
        await controller_of(memo).publish(budgets, bursts, without=key)
        log.info("%s %s removed from the published config", plural, key)

    # Told to stop (deletion, pause, exit), a daemon ends its turn or is cancelled a
    # second later: a deletion's finalizer waits for it.
    @kopf.daemon(
        API_GROUP,
        VERSION,
        plural,
        registry=registry,
        id="loop",
        cancellation_backoff=1.0,
        cancellation_timeout=10.0,
    )
    async def loop(uid: str, stopped: kopf.DaemonStopped, memo: Any, **indexes: Any) -> None:
        budgets, bursts = indexes["budgets"], indexes["bursts"]
        await controller_of(memo).take_turns(
            uid, lambda: bool(stopped), lambda: manifests(budgets), lambda: manifests(bursts)
        )


def configure_kopf(kopf_settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    prefix = API_GROUP
    kopf_settings.persistence.finalizer = f"{prefix}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    kopf_settings.peering.lifetime = ours.peering_lifetime_seconds
    kopf_settings.watching.server_timeout = 300  # re-list now and then: no silent stale watch
    kopf_settings.watching.client_timeout = 330
    kopf_settings.posting.loggers = False  # only the Events the controller raises
