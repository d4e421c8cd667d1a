"""The webhook's parts, made and put together once at start-up: the only place that
knows how they fit. Everything is built from ``WebhookSettings`` and a clock; nothing
is a module global, so a test builds as many webhooks as it likes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from budget_guard.domain.instants import utc_now
from budget_guard.domain.tokens import MessageTokenCache, RequestEstimator
from budget_guard.loaders.tokenizers import LoadedTokenizers, load_tokenizers
from budget_guard.webhook.active_config import ConfigHolder
from budget_guard.webhook.admission import Admission, AdmissionSettings
from budget_guard.webhook.api import ApiService
from budget_guard.webhook.api_tokens import ApiTokens, ApiTokensError
from budget_guard.webhook.background import BackgroundWork
from budget_guard.webhook.check import CheckService
from budget_guard.webhook.counted_prompts import CountedPrompts
from budget_guard.webhook.decide import Decider, DecisionSettings
from budget_guard.webhook.ext_proc import AuthorizationService, ExtProcService, Settler
from budget_guard.webhook.gateway import GatewayTools
from budget_guard.webhook.identity import HeaderIdentity, IdentityResolver, JwksKeys, JwtIdentity
from budget_guard.webhook.ledger_access import LedgerAccess
from budget_guard.webhook.metrics import Metrics, WebhookState
from budget_guard.webhook.resent import ResentConversations
from budget_guard.webhook.settings import WebhookSettings
from budget_guard.webhook.settlement import SettlementService


@dataclass
class Webhook:
    """One webhook process: its listeners' services (HTTP check, API, gRPC ext_proc and
    ext_authz), its background work, and the ledger they share."""

    settings: WebhookSettings
    checks: CheckService
    api: ApiService
    ext_proc: ExtProcService
    authorization: AuthorizationService
    settler: Settler
    gateway: GatewayTools
    background: BackgroundWork
    ledger: LedgerAccess
    config: ConfigHolder
    clock: Callable[[], dt.datetime]


def build_webhook(settings: WebhookSettings, clock: Callable[[], dt.datetime] = utc_now) -> Webhook:
    config = ConfigHolder()
    ledger = LedgerAccess.open(settings, config)
    metrics = Metrics()
    config.listeners.append(lambda _: metrics.config_reloads.inc())
    tokenizers = load_tokenizers()
    identity, jwks = _identity(settings)
    admission = Admission(
        AdmissionSettings(
            max_inflight=settings.listen.max_inflight_decisions,
            gateway_timeout_seconds=settings.listen.gateway_timeout_ms / 1000,
            ledger_timeout_seconds=settings.redis.timeout_ms / 1000,
        )
    )
    _expose(metrics, ledger, config, admission, tokenizers)
    estimator = _estimator(settings, tokenizers)
    counted = CountedPrompts()
    decider = Decider(
        config=config,
        leases=ledger.leases,
        estimator=estimator,
        identity=identity,
        journal=ledger.journal,
        admission=admission,
        settings=DecisionSettings(
            max_body_bytes=settings.listen.max_body_bytes,
            model_header=settings.identity.model_header,
            strip_headers=settings.strip_headers,
            log_allowed=settings.log_allowed,
        ),
        outage=lambda: ledger.channel.outages,
        clock=clock,
        counted=counted,
        resent=ResentConversations() if settings.message_cache_entries else None,
    )
    settlement = SettlementService(
        config, ledger.operations, ledger.journal, ledger.leases, metrics, clock, counted
    )
    checks = CheckService(decider, admission, metrics, settings.listen)
    settler = Settler(settlement, metrics)
    gateway = GatewayTools(config, estimator, settings.listen.max_body_bytes)
    return Webhook(
        settings=settings,
        checks=checks,
        ext_proc=ExtProcService(gateway, settler, metrics),
        authorization=AuthorizationService(checks),
        settler=settler,
        gateway=gateway,
        api=ApiService(
            config=config,
            ledger=ledger,
            settlement=settlement,
            tokens=_api_tokens(settings),
            identity=identity,
            metrics=metrics,
            jwks=jwks,
            tokenizer_failures=tokenizers.failures,
            clock=clock,
            checks=checks,
        ),
        background=BackgroundWork(settings, config, ledger, settlement, metrics, jwks, clock),
        ledger=ledger,
        config=config,
        clock=clock,
    )


def _api_tokens(settings: WebhookSettings) -> ApiTokens:
    """The API listener's tokens; a malformed source stops the start with its reason."""
    try:
        return ApiTokens(settings.api_tokens, settings.usage_token_file)
    except ApiTokensError as error:
        raise SystemExit(f"the API tokens cannot be used: {error}") from None


def _identity(settings: WebhookSettings) -> tuple[IdentityResolver, JwksKeys | None]:
    if settings.identity.mode == "jwt":
        jwks = JwksKeys(settings.identity.jwt)
        return JwtIdentity(settings.identity, jwks), jwks
    return HeaderIdentity(settings.identity), None


def _estimator(settings: WebhookSettings, tokenizers: LoadedTokenizers) -> RequestEstimator:
    entries = settings.message_cache_entries
    return RequestEstimator(tokenizers.tokenizers, MessageTokenCache(entries) if entries else None)


def _expose(
    metrics: Metrics,
    ledger: LedgerAccess,
    config: ConfigHolder,
    admission: Admission,
    tokenizers: LoadedTokenizers,
) -> None:
    """The metrics read at each scrape from counters kept on the hot path."""
    leases, channel, journal = ledger.leases, ledger.channel, ledger.journal
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
            config_loaded=config.current is not None,
            config_error=config.last_error is not None,
            journal_entries=len(journal),
            journal_dropped=journal.dropped,
            open_leases=leases.open_leases,
            queued_local_decisions=leases.queued,
            tokenizer_fallbacks=tokenizers.failures,
        )
    )
