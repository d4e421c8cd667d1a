"""Every Kopf registration of the operator, in one place; the logic is in ``controller``.

- Every watch event (the initial listing included) goes into the controller's cache;
  one that changes a spec or the set of resources marks the config dirty, and the loop
  publishes. No per-resource handler state is kept: nothing but the finalizer is
  written on a resource by Kopf.
- Deletion (through a finalizer) publishes the config without the resource before
  the resource goes; its spend stays in Redis for chargeback.
- The loop runs while this replica is the active one. With peering, that is while Kopf
  runs a daemon on the peering object the replicas share (Kopf stops every daemon of a
  paused replica, and starts them again when it resumes); standalone, always.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from budget_guard.domain.manifest import API_GROUP, VERSION
from budget_guard.operator.controller import Controller
from budget_guard.operator.kube import PEERING_GROUP, PEERING_VERSION
from budget_guard.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

KINDS = ("llmbudgets", "burstbudgets")


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
        if ours.metrics_address:
            memo["metrics_server"] = controller.metrics.serve(ours.metrics_address)
        if ours.standalone:
            memo["loop"] = asyncio.create_task(controller.run_alone())
        else:
            await controller.kube.ensure_peering(ours.peering_name, ours.namespaces)
        metrics_server = memo.get("metrics_server")
        log.info(
            "operator started",
            extra={
                "namespaces": list(ours.namespaces) or "all",
                "standalone": ours.standalone,
                "priority": ours.priority,
                "metrics_port": metrics_server.port if metrics_server else None,
            },
        )

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        controller = memo.get("controller")
        if controller is not None:
            await controller.close()
        metrics_server = memo.get("metrics_server")
        if metrics_server is not None:
            metrics_server.close()

    for plural in KINDS:
        _register_kind(registry, plural)
    if not ours.standalone:
        _register_loop(registry, ours)
    return registry


def _register_kind(registry: kopf.OperatorRegistry, plural: str) -> None:
    # Async on purpose: Kopf runs a plain function in a thread, and the cache belongs to
    # the event loop (and a thread per event is most of the cost of ten thousand).
    @kopf.on.event(API_GROUP, VERSION, plural, registry=registry, id="cache")
    async def cache(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        resource = event["object"]
        controller_of(memo).observe(plural, resource, deleted=event["type"] == "DELETED")

    @kopf.on.delete(API_GROUP, VERSION, plural, registry=registry, id="unpublish")
    async def unpublish(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
        key = f"{namespace}/{name}"
        await controller_of(memo).unpublish(key)
        log.info("%s %s removed from the published config", plural, key)


def _register_loop(registry: kopf.OperatorRegistry, ours: OperatorSettings) -> None:
    """The loop as a daemon of the peering object(s): one per namespace watched, or the
    cluster's one. Kopf adds its finalizer to them, as to every resource with a daemon."""
    plural = "kopfpeerings" if ours.namespaces else "clusterkopfpeerings"

    # Told to stop (pause, exit), the daemon ends its turn or is cancelled a second later.
    @kopf.daemon(
        PEERING_GROUP,
        PEERING_VERSION,
        plural,
        registry=registry,
        id="loop",
        field="metadata.name",
        value=ours.peering_name,
        cancellation_backoff=1.0,
        cancellation_timeout=10.0,
    )
    async def loop(uid: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
        await controller_of(memo).take_turns(uid, lambda: bool(stopped))


class QuietCacheHandler(logging.Filter):
    """Kopf logs every handler's success at INFO: for the cache, a line per watch event
    (ten thousand at a start among ten thousand budgets, and their writing cost more
    than the handler). Its failures still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Handler 'cache' succeeded."


class NoDiffBase(kopf.DiffBaseStorage):
    """Keeps no "last handled" state on resources (the operator has no diff handlers)."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def configure_kopf(kopf_settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    prefix = API_GROUP
    kopf_settings.persistence.finalizer = f"{prefix}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    # Without create/update/resume handlers Kopf needs no diff base: not storing one
    # saves a patch per resource (10,000 at a first start among 10,000 budgets).
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    kopf_settings.peering.lifetime = ours.peering_lifetime_seconds
    kopf_settings.watching.server_timeout = 300  # re-list now and then: no silent stale watch
    kopf_settings.watching.client_timeout = 330
    kopf_settings.posting.loggers = False  # only the Events the controller raises
    # Kopf's client opens a connection per request in flight, without a limit: a worker
    # per resource at once (a start among a thousand budgets) would hold a thousand TLS
    # connections. Bounded workers, that exit soon after their resource goes quiet.
    kopf_settings.queueing.worker_limit = ours.kopf_workers
    kopf_settings.queueing.idle_timeout = 0.5
    kopf_settings.posting.worker_limit = 4
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(known, QuietCacheHandler) for known in objects.filters):
        objects.addFilter(QuietCacheHandler())
