"""The webhook process: two aiohttp listeners over one ``Guard``, and its background work.

- check listener: every method and path is an Envoy ext_authz check;
- API listener: ``POST /v1/usage``, ``GET /v1/budgets``, ``/healthz``, ``/readyz``,
  ``/metrics``, ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from budget_guard.domain.tokens import MessageTokenCache, RequestEstimator
from budget_guard.loaders.tokenizers import load_tokenizers
from budget_guard.store.channel import ChannelSettings, LedgerChannel
from budget_guard.store.config import ConfigStore
from budget_guard.store.leases import LeaseSettings, LocalLeases
from budget_guard.store.ledger import Ledger, LedgerSettings
from budget_guard.store.scripts import RESERVE
from budget_guard.store.status import read_usage
from budget_guard.webhook import openapi
from budget_guard.webhook.admission import Admission, AdmissionSettings
from budget_guard.webhook.config import (
    CompiledConfig,
    ConfigHolder,
    FileSource,
    LabelValues,
    RedisSource,
)
from budget_guard.webhook.decide import CheckRequest, Decider, DecisionSettings
from budget_guard.webhook.identity import HeaderIdentity, IdentityResolver, JwksKeys, JwtIdentity
from budget_guard.webhook.journal import DegradedJournal
from budget_guard.webhook.metrics import Metrics, WebhookState
from budget_guard.webhook.responses import (
    JSON,
    LEDGER_FAILURE_REASONS,
    CheckAnswer,
    error_answer,
    overloaded_answer,
)
from budget_guard.webhook.settings import WebhookSettings
from budget_guard.webhook.settlement import SettlementService, UsageTokens
from budget_guard.webhook.views import budgets_document

log = logging.getLogger(__name__)

UTILIZATION_REFRESH_SECONDS = 15.0
OPS_SOCKET_TIMEOUT_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 5.0
JOURNAL_REPLAY_SECONDS = 1.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Guard:
    """Everything one webhook process shares between its listeners and tasks."""

    settings: WebhookSettings
    redis: Redis  # settlement, sweeps, reads, config: with a socket timeout
    decisions_redis: Redis  # the hot path's connections (see channel)
    channel: LedgerChannel  # reservations, pipelined; stalls judged by --ledger-timeout-ms
    ledger: Ledger  # for decisions
    ops_ledger: Ledger  # for everything else
    leases: LocalLeases
    holder: ConfigHolder
    admission: Admission
    decider: Decider
    settlement: SettlementService
    tokens: UsageTokens
    metrics: Metrics
    journal: DegradedJournal
    jwks: JwksKeys | None
    clock: Callable[[], dt.datetime]
    tokenizer_failures: dict[str, str] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


GUARD = web.AppKey("guard", Guard)


def build_guard(settings: WebhookSettings, clock: Callable[[], dt.datetime] = utc_now) -> Guard:
    ledger_timeout = settings.ledger.timeout_ms / 1000
    connect_timeout = max(0.05, ledger_timeout)
    channel_settings = ChannelSettings(stall_timeout_seconds=ledger_timeout)
    # No socket timeout and no retries on the decision client: the channel judges
    # Redis's health itself, and a retry would only hide an outage from it.
    decisions_redis = Redis.from_url(
        settings.ledger.redis_url,
        socket_connect_timeout=channel_settings.connect_timeout_seconds,
        socket_timeout=None,
        max_connections=8,
        retry=Retry(NoBackoff(), 0),
    )
    channel = LedgerChannel(
        decisions_redis.connection_pool, channel_settings, preload=[RESERVE.load_command]
    )
    redis = Redis.from_url(
        settings.ledger.redis_url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=OPS_SOCKET_TIMEOUT_SECONDS,
        max_connections=64,
    )
    ledger_settings = LedgerSettings(
        reservation_ttl=dt.timedelta(seconds=settings.ledger.reservation_ttl_seconds),
        expired_reservations=settings.ledger.expired_reservations,
    )
    ledger = Ledger(decisions_redis, ledger_settings, channel=channel)
    ops_ledger = Ledger(redis, ledger_settings)
    holder = ConfigHolder()
    metrics = Metrics()
    holder.listeners.append(lambda _: metrics.config_reloads.inc())
    loaded = load_tokenizers()
    cache = MessageTokenCache(settings.message_cache_entries)
    estimator = RequestEstimator(
        loaded.tokenizers, cache if settings.message_cache_entries else None
    )
    jwks: JwksKeys | None = None
    identity: IdentityResolver
    if settings.identity.mode == "jwt":
        jwks = JwksKeys(settings.identity.jwt)
        identity = JwtIdentity(settings.identity, jwks)
    else:
        identity = HeaderIdentity(settings.identity)
    journal = DegradedJournal(ops_ledger)
    leases = LocalLeases(ledger, LeaseSettings(enabled=settings.local_leases), ops_ledger)
    admission = Admission(
        AdmissionSettings(
            max_inflight=settings.listen.max_inflight_decisions,
            gateway_timeout_seconds=settings.listen.gateway_timeout_ms / 1000,
            ledger_timeout_seconds=ledger_timeout,
        )
    )
    metrics.count_decision_paths(
        lambda: {"local": leases.local_decisions, "ledger": leases.ledger_decisions}
    )
    metrics.count_shed(lambda: dict(admission.shed))
    metrics.watch_ledger_channel(
        lambda: {
            "commands": channel.commands,
            "writes": channel.batches,
            "stalls": channel.stalls,
            "outages": channel.outages,
        }
    )
    metrics.watch_state(
        lambda: WebhookState(
            config_loaded=holder.current is not None,
            config_error=holder.last_error is not None,
            journal_entries=len(journal),
            journal_dropped=journal.dropped,
            open_leases=leases.open_leases,
            queued_local_decisions=leases.queued,
            tokenizer_fallbacks=loaded.failures,
        )
    )
    decider = Decider(
        holder=holder,
        leases=leases,
        estimator=estimator,
        identity=identity,
        journal=journal,
        admission=admission,
        settings=DecisionSettings(
            max_body_bytes=settings.listen.max_body_bytes,
            model_header=settings.identity.model_header,
            strip_headers=settings.strip_headers,
            log_allowed=settings.log_allowed,
        ),
        outage=lambda: channel.outages,
        clock=clock,
    )
    return Guard(
        settings=settings,
        redis=redis,
        decisions_redis=decisions_redis,
        channel=channel,
        ledger=ledger,
        ops_ledger=ops_ledger,
        leases=leases,
        holder=holder,
        admission=admission,
        decider=decider,
        settlement=SettlementService(holder, ops_ledger, journal, leases, metrics, clock),
        tokens=UsageTokens(settings.usage_token_file),
        metrics=metrics,
        journal=journal,
        jwks=jwks,
        clock=clock,
        tokenizer_failures=loaded.failures,
    )


# -- the check listener ------------------------------------------------------------


def _strip_prefix(path: str, prefix: str) -> str:
    if prefix and path.startswith(prefix):
        return path[len(prefix) :] or "/"
    return path


async def check(guard: Guard, request: web.BaseRequest) -> web.StreamResponse:
    started = time.perf_counter()
    admission = guard.admission
    if not admission.enter():
        answer = overloaded_answer(os.urandom(16).hex(), "too many checks in flight")
    else:
        try:
            answer = await _decide(guard, request, started)
        finally:
            admission.leave()
    metrics = guard.metrics
    metrics.count_decision(answer.decision, answer.reason, time.perf_counter() - started)
    if answer.reason in LEDGER_FAILURE_REASONS:
        metrics.ledger_errors.labels("reserve").inc()
        if answer.decision == "allow":
            metrics.fail_open.inc()
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


async def _decide(guard: Guard, request: web.BaseRequest, started: float) -> CheckAnswer:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = guard.settings.listen.max_body_bytes
        return error_answer(
            413, "body_too_large", f"the body exceeds {limit} bytes, the most that is checked"
        )
    path = _strip_prefix(request.path_qs, guard.settings.listen.path_prefix)
    return await guard.decider.decide(
        CheckRequest(request.method, path, request.headers, body, started)
    )


def build_check_server(guard: Guard, **handler_options: Any) -> web.Server:
    """aiohttp's low-level server: every method and path is a check, so the
    application layer (router, middlewares, signals) would only add work per request."""
    max_body_bytes = guard.settings.listen.max_body_bytes

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return await check(guard, request)

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body_bytes
        )

    return web.Server(handle, request_factory=make_request, **handler_options)


# -- the API listener ----------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type=JSON)


def _error(status: int, code: str, message: str) -> web.Response:
    body = error_answer(status, code, message).body
    return web.Response(status=status, body=body, content_type=JSON)


async def post_usage(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    problem = guard.tokens.problem(request.headers.get("authorization", ""))
    if problem is not None:
        return _error(401, "unauthorized", problem)
    try:
        document = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return _error(400, "invalid_json", f"the body is not valid JSON: {error}")
    service = guard.settlement
    try:
        reports = service.parse(document)
        costs = service.price(reports)
    except ValueError as error:
        return _error(400, "invalid_usage", str(error))
    except LookupError as error:
        return _error(503, "config_unavailable", str(error))
    results = [
        await service.settle(report, cost) for report, cost in zip(reports, costs, strict=True)
    ]
    if isinstance(document, list):
        return _json({"results": [result.body for result in results]})
    (result,) = results
    return _json(result.body, result.http_status)


async def get_budgets(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    config = guard.holder.current
    if config is None:
        return _error(503, "config_unavailable", "no budget configuration is loaded yet")
    try:
        usages = await read_usage(guard.redis, config.snapshot, guard.clock(), guard.ledger.keys)
    except (RedisError, OSError) as error:
        return _error(503, "ledger_unavailable", f"the ledger cannot be reached: {error}")
    return _json(budgets_document(config, usages))


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "alive"})


async def _probe_ledger(guard: Guard) -> str | None:
    """The ledger as checks see it (the decision path's connection, judged on every
    reply and stall); None when it answers."""
    channel = guard.channel
    guard.metrics.ledger_up.set(1 if channel.healthy else 0)
    return None if channel.healthy else channel.last_error


async def readyz(request: web.Request) -> web.Response:
    """Ready means a configuration is loaded. Redis is reported, not required: a pod taken
    out of its Service would leave Envoy to answer errors itself, and each budget's
    failureMode would never get its say."""
    guard = request.app[GUARD]
    problems = []
    config = guard.holder.current
    if config is None:
        problems.append(f"no config loaded: {guard.holder.last_error or 'loading'}")
    if guard.jwks is not None and not guard.jwks.loaded:
        problems.append(f"JWKS not loaded: {guard.jwks.error}")
    ledger_error = await _probe_ledger(guard)
    warnings = [
        f"tokenizer {encoding} not loaded ({error}): its models are estimated with a fallback"
        for encoding, error in guard.tokenizer_failures.items()
    ]
    if ledger_error is not None:
        warnings.append(f"ledger unreachable ({ledger_error}): each budget's failureMode decides")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not ready",
        "configVersion": config.version if config else None,
        "configError": guard.holder.last_error,
        "ledger": {"reachable": ledger_error is None, "error": ledger_error},
        "tokenizerFallbacks": guard.tokenizer_failures,
        "degradedJournal": len(guard.journal),
        "openLeases": guard.leases.open_leases,
        "queuedLocalDecisions": guard.leases.queued,
    }
    if problems:
        body["problems"] = problems
    if warnings:
        body["warnings"] = warnings
    return _json(body, 200 if not problems else 503)


async def metrics(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    await _probe_ledger(guard)
    exposition = guard.metrics.exposition()
    return web.Response(body=exposition, content_type="text/plain", charset="utf-8")


async def openapi_json(request: web.Request) -> web.Response:
    return _json(openapi.document())


def build_api_app(guard: Guard) -> web.Application:
    app = web.Application(client_max_size=max(guard.settings.listen.max_body_bytes, 4 * 1024**2))
    app[GUARD] = guard
    app.router.add_post("/v1/usage", post_usage)
    app.router.add_get("/v1/budgets", get_budgets)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    return app


# -- background work ---------------------------------------------------------------


async def _every(
    seconds: float, work: Callable[[], Awaitable[None]], what: str, errors: Counter
) -> None:
    while True:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # a cancellation a library turned into an error
            raise asyncio.CancelledError
        await asyncio.sleep(seconds)
        try:
            await work()
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("%s skipped: ledger unavailable (%s)", what, error)
            errors.labels(what).inc()
        except Exception:
            log.exception("%s failed", what)


async def _sweep(guard: Guard) -> None:
    for settlement in await guard.ops_ledger.sweep_expired(guard.clock()):
        guard.settlement.record_spend(settlement)


async def _refresh_utilization(guard: Guard) -> None:
    config = guard.holder.current
    if config is None:
        return
    gauge = guard.metrics.utilization
    for usage in await read_usage(guard.redis, config.snapshot, guard.clock(), guard.ledger.keys):
        if not usage.budget.scope.is_user_template:
            gauge.labels(budget=usage.budget.id).set(usage.utilization)


def _on_new_config(guard: Guard, config: CompiledConfig) -> None:
    # Budgets may be gone from the new config; the next refresh re-fills the rest.
    guard.metrics.utilization.clear()
    # Limits may have changed: leases taken under the old ones go back.
    task = asyncio.get_running_loop().create_task(_return_leases(guard))
    guard.tasks.append(task)


async def _return_leases(guard: Guard) -> None:
    try:
        await guard.leases.close()
    except (RedisError, OSError) as error:
        log.warning("leases could not be returned after a config change: %s", error)


async def start_background(guard: Guard, session: aiohttp.ClientSession) -> None:
    settings = guard.settings
    labels = LabelValues(
        settings.metrics.tenants, settings.metrics.features, settings.metrics.models
    )
    guard.holder.listeners.append(lambda config: _on_new_config(guard, config))
    if not await guard.channel.start():  # it keeps trying in the background
        log.warning("the ledger cannot be reached yet; budgets' failure modes decide meanwhile")
    if guard.jwks is not None:
        await guard.jwks.refresh(session)
        guard.tasks.append(asyncio.create_task(guard.jwks.keep_fresh(session)))
    source_settings = settings.config
    if source_settings.budgets_path is not None:
        files = FileSource(
            guard.holder, source_settings.budgets_path, source_settings.pricing_file, labels
        )
        files.load()
        guard.tasks.append(
            asyncio.create_task(files.watch(source_settings.reload_interval_seconds))
        )
    else:
        store = ConfigStore(guard.redis, guard.ledger.keys)
        redis_source = RedisSource(
            guard.holder, guard.redis, store, source_settings.pricing_file, labels
        )
        with contextlib.suppress(RedisError, OSError):
            await redis_source.load()
        guard.tasks.append(
            asyncio.create_task(redis_source.watch(source_settings.version_check_seconds))
        )
    guard.tasks += [
        asyncio.create_task(
            _every(
                settings.ledger.sweep_interval_seconds,
                lambda: _sweep(guard),
                "sweep",
                guard.metrics.ledger_errors,
            )
        ),
        asyncio.create_task(
            _every(
                UTILIZATION_REFRESH_SECONDS,
                lambda: _refresh_utilization(guard),
                "utilization",
                guard.metrics.ledger_errors,
            )
        ),
        asyncio.create_task(guard.journal.keep_replaying(JOURNAL_REPLAY_SECONDS, guard.clock)),
        asyncio.create_task(guard.leases.keep_flushing()),
        asyncio.create_task(guard.leases.keep_returning_idle()),
    ]


async def stop_background(guard: Guard) -> None:
    for task in guard.tasks:
        task.cancel()
    if guard.tasks:
        _, stuck = await asyncio.wait(guard.tasks, timeout=STOP_TIMEOUT_SECONDS)
        for task in stuck:
            log.error("background task %s did not stop in time", task.get_name())
    guard.tasks.clear()
    try:
        await guard.leases.close()  # commit local decisions, give every lease back
    except (RedisError, OSError) as error:
        log.error("at shutdown, local decisions or leases could not be returned: %s", error)
    if len(guard.journal):
        await guard.journal.replay(guard.clock())  # last chance to record degraded spend
    await guard.channel.aclose()
    await guard.redis.aclose()
    await guard.decisions_redis.aclose()


@contextlib.asynccontextmanager
async def running(guard: Guard) -> AsyncIterator[tuple[int, int]]:
    """Both listeners and the background work; yields the bound (check, api) ports."""
    listen = guard.settings.listen
    handler_options: dict[str, Any] = {
        "access_log": None,
        "keepalive_timeout": listen.keepalive_seconds,
        "max_line_size": listen.max_header_bytes,
        "max_field_size": listen.max_header_bytes,
    }
    # The check listener reads bodies as Envoy forwarded them (decompressed by us, bounded).
    check_server = build_check_server(guard, auto_decompress=False, **handler_options)
    check_runner = web.ServerRunner(check_server, handle_signals=False)
    api_runner = web.AppRunner(build_api_app(guard), handle_signals=False, **handler_options)
    async with aiohttp.ClientSession() as session:
        await start_background(guard, session)
        await check_runner.setup()
        await api_runner.setup()
        try:
            check_site = web.TCPSite(check_runner, listen.host, listen.check_port)
            api_site = web.TCPSite(api_runner, listen.host, listen.api_port)
            await check_site.start()
            await api_site.start()
            yield _bound_port(check_runner), _bound_port(api_runner)
        finally:
            await check_runner.cleanup()
            await api_runner.cleanup()
            await stop_background(guard)


def _bound_port(runner: web.BaseRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


async def serve(settings: WebhookSettings) -> None:
    guard = build_guard(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with running(guard) as (check_port, api_port):
        # Everything loaded so far (tokenizer vocabularies, config) lives as long as the
        # process: keep it out of the garbage collector's scans, which would otherwise
        # walk it on every full collection and show up in the decision latency.
        gc.freeze()
        log.info(
            "webhook listening: checks on %s:%d, API on %s:%d",
            settings.listen.host,
            check_port,
            settings.listen.host,
            api_port,
            extra={"check_port": check_port, "api_port": api_port},
        )
        await stop.wait()
        log.info("webhook stopping")
