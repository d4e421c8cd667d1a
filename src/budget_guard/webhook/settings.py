"""The webhook's settings: typed groups, each option a flag and an environment variable.

Every option ``--some-name`` can also be set as ``BUDGET_GUARD_SOME_NAME``; a flag
wins over the variable. ``WebhookSettings.from_args`` is the only place options are
read: the rest of the webhook receives these frozen dataclasses.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from budget_guard.domain.budget import is_valid_scope_value
from budget_guard.domain.resolution import RequestIdentity
from budget_guard.options import Option, add_options, parse_bool
from budget_guard.store.connect import checked_redis_url
from budget_guard.store.ledger import ExpiredReservations


@dataclass(frozen=True)
class ListenSettings:
    host: str = "0.0.0.0"  # noqa: S104 - a gateway reaches it from another pod
    check_port: int = 8080
    api_port: int = 8081
    ext_proc_port: int = 9090  # gRPC: ext_proc and ext_authz; 0 turns it off
    path_prefix: str = ""
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    keepalive_seconds: float = 620.0  # longer than Envoy's default upstream idle timeout
    gateway_timeout_ms: int = 200  # the gateway's ext_authz timeout: every answer comes sooner
    max_inflight_decisions: int = 512  # checks decided at once; more are turned away


@dataclass(frozen=True)
class JwtSettings:
    jwks_file: Path | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    tenant_claim: str = "tenant"
    user_claim: str = "sub"
    tier_claim: str = "tier"
    feature_claim: str = "feature"
    leeway_seconds: int = 30
    jwks_refresh_seconds: int = 300


@dataclass(frozen=True)
class IdentitySettings:
    mode: str = "headers"  # or "jwt"
    tenant_header: str = "x-budget-tenant"
    user_header: str = "x-budget-user"
    tier_header: str = "x-budget-tier"
    feature_header: str = "x-budget-feature"
    model_header: str = "x-budget-model"
    anonymous: RequestIdentity | None = None
    jwt: JwtSettings = field(default_factory=JwtSettings)

    @property
    def identity_headers(self) -> tuple[str, ...]:
        return (self.tenant_header, self.user_header, self.tier_header, self.feature_header)


@dataclass(frozen=True)
class RedisSettings:
    """Where the ledger is, and how long Redis may stay silent before it is unavailable."""

    url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: int = 50


@dataclass(frozen=True)
class ReservationSettings:
    """How long a reservation waits for its usage, and what an unsettled one costs."""

    ttl_seconds: int = 900
    expired: ExpiredReservations = ExpiredReservations.KEEP
    sweep_interval_seconds: float = 15.0


@dataclass(frozen=True)
class RetentionSettings:
    """What the ledger keeps for reports besides the 13 months of daily aggregates: the
    per-user detail (it grows with users x days) and the settled-requests stream."""

    user_detail_days: int = 35
    settled_stream_length: int = 100_000
    settled_stream_age_hours: int = 168


@dataclass(frozen=True)
class ConfigSourceSettings:
    budgets_path: Path | None = None  # standalone mode; else the operator's snapshot in Redis
    pricing_file: Path | None = None
    reload_interval_seconds: float = 2.0
    version_check_seconds: float = 10.0


@dataclass(frozen=True)
class MetricsSettings:
    """Label values allowed on spend metrics; others become "other". Empty: the values
    the budgets themselves name (tenants, features) and the priced models."""

    tenants: frozenset[str] = frozenset()
    features: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WebhookSettings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    reservations: ReservationSettings = field(default_factory=ReservationSettings)
    config: ConfigSourceSettings = field(default_factory=ConfigSourceSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    usage_token_file: Path | None = None  # one shared token, acting as admin
    api_tokens: Path | None = None  # tokens with their tenants (webhook.api_tokens)
    strip_headers: tuple[str, ...] = ()  # removed from the upstream request on allow
    log_level: str = "INFO"
    log_allowed: bool = False  # one log line per allowed request (denials are always logged)
    message_cache_entries: int = 50_000  # token counts of message texts; 0 turns it off
    local_leases: bool = True  # decide most requests in process, from budget leased ahead
    journal_dir: Path | None = None  # the fail-open journal on disk; None: in memory only

    def __post_init__(self) -> None:
        if self.redis.timeout_ms >= self.listen.gateway_timeout_ms:
            raise ValueError(
                f"--ledger-timeout-ms ({self.redis.timeout_ms}) must be below "
                f"--gateway-timeout-ms ({self.listen.gateway_timeout_ms}): a stalled ledger "
                "must leave time to answer by the budgets' failure modes before the gateway "
                "gives up"
            )
        if self.listen.max_inflight_decisions < 1:
            raise ValueError("--max-inflight-decisions must be at least 1")

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> WebhookSettings:
        parser = build_parser()
        return cls.from_namespace(parser.parse_args(argv))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> WebhookSettings:
        identity_mode = ns.identity
        header_names = {
            "tenant_header": ns.tenant_header.lower(),
            "user_header": ns.user_header.lower(),
            "tier_header": ns.tier_header.lower(),
            "feature_header": ns.feature_header.lower(),
            "model_header": ns.model_header.lower(),
        }
        identity = IdentitySettings(
            mode=identity_mode,
            anonymous=ns.anonymous_identity,
            jwt=JwtSettings(
                jwks_file=ns.jwt_jwks_file,
                jwks_url=ns.jwt_jwks_url,
                issuer=ns.jwt_issuer,
                audience=ns.jwt_audience,
                algorithms=tuple(ns.jwt_algorithms),
                tenant_claim=ns.jwt_tenant_claim,
                user_claim=ns.jwt_user_claim,
                tier_claim=ns.jwt_tier_claim,
                feature_claim=ns.jwt_feature_claim,
            ),
            **header_names,
        )
        if identity_mode == "jwt" and not (ns.jwt_jwks_file or ns.jwt_jwks_url):
            raise SystemExit("--identity jwt needs --jwt-jwks-file or --jwt-jwks-url")
        strip = tuple(h.lower() for h in ns.strip_headers)
        if identity_mode == "jwt" and not strip:
            strip = identity.identity_headers  # never let client-sent copies reach upstream
        try:
            return cls._build(ns, identity, strip)
        except ValueError as error:
            raise SystemExit(str(error)) from None

    @classmethod
    def _build(
        cls, ns: argparse.Namespace, identity: IdentitySettings, strip: tuple[str, ...]
    ) -> WebhookSettings:
        return cls(
            listen=ListenSettings(
                host=ns.host,
                check_port=ns.check_port,
                api_port=ns.api_port,
                ext_proc_port=ns.ext_proc_port,
                path_prefix=ns.path_prefix.rstrip("/"),
                max_body_bytes=ns.max_body_bytes,
                max_header_bytes=ns.max_header_bytes,
                gateway_timeout_ms=ns.gateway_timeout_ms,
                max_inflight_decisions=ns.max_inflight_decisions,
            ),
            identity=identity,
            redis=RedisSettings(url=ns.redis_url, timeout_ms=ns.ledger_timeout_ms),
            reservations=ReservationSettings(
                ttl_seconds=ns.reservation_ttl_seconds,
                expired=ExpiredReservations(ns.expired_reservations),
                sweep_interval_seconds=ns.sweep_interval_seconds,
            ),
            config=ConfigSourceSettings(
                budgets_path=ns.budgets,
                pricing_file=ns.pricing,
                reload_interval_seconds=ns.reload_interval_seconds,
            ),
            metrics=MetricsSettings(
                tenants=frozenset(ns.metrics_tenants),
                features=frozenset(ns.metrics_features),
                models=frozenset(ns.metrics_models),
            ),
            retention=RetentionSettings(
                user_detail_days=ns.user_detail_days,
                settled_stream_length=ns.settled_stream_length,
                settled_stream_age_hours=ns.settled_stream_age_hours,
            ),
            usage_token_file=ns.usage_token_file,
            api_tokens=ns.api_tokens,
            strip_headers=strip,
            log_level=ns.log_level.upper(),
            log_allowed=ns.log_allowed,
            message_cache_entries=ns.message_cache_entries,
            local_leases=ns.local_leases,
            journal_dir=ns.journal_dir,
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _identity(text: str) -> RequestIdentity:
    """``tenant=public,user=anonymous`` as an identity."""
    values: dict[str, str] = {}
    for part in _csv(text):
        name, _, value = part.partition("=")
        if name not in ("tenant", "user", "tier", "feature") or not is_valid_scope_value(value):
            raise argparse.ArgumentTypeError(
                f"{part!r}: use tenant=, user=, tier=, feature= with plain values"
            )
        values[name] = value
    return RequestIdentity(**values)


_OPTIONS = (
    Option(
        "--budgets",
        "standalone mode: a file or directory of LLMBudget/BurstBudget YAML "
        "(without it, read the operator's published config from Redis)",
        Path,
    ),
    Option("--pricing", "price table YAML or JSON merged over the shipped defaults", Path),
    Option(
        "--redis-url",
        "the ledger's Redis: redis://, rediss://, unix://, "
        "redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db], or "
        "redis+cluster://[[user]:password@]host:port[,host:port...] (docs/redis-topologies.md)",
        checked_redis_url,
        RedisSettings.url,
    ),
    Option(
        "--ledger-timeout-ms",
        "Redis counts as unavailable when it sends no reply for this long while commands "
        "are outstanding; then each budget's failureMode decides (below --gateway-timeout-ms)",
        int,
        RedisSettings.timeout_ms,
    ),
    Option(
        "--gateway-timeout-ms",
        "the gateway's ext_authz timeout (Envoy's default: 200): a check that cannot be sent "
        "to Redis within this minus --ledger-timeout-ms of its arrival is answered 429 "
        "overloaded",
        int,
        ListenSettings.gateway_timeout_ms,
    ),
    Option(
        "--max-inflight-decisions",
        "checks decided at once (each holds its body in memory); more are answered 429 "
        "overloaded at once",
        int,
        ListenSettings.max_inflight_decisions,
    ),
    Option(
        "--reservation-ttl-seconds",
        "settle deadline of a reservation",
        int,
        ReservationSettings.ttl_seconds,
    ),
    Option(
        "--expired-reservations",
        "what an unsettled reservation costs: Keep (its estimate) or Release (nothing)",
        str,
        "Keep",
        ("Keep", "Release"),
    ),
    Option(
        "--sweep-interval-seconds",
        "how often overdue reservations are settled",
        float,
        ReservationSettings.sweep_interval_seconds,
    ),
    Option(
        "--usage-token-file",
        "file holding one shared bearer token for the API listener; it acts as admin "
        "(every tenant)",
        Path,
    ),
    Option(
        "--api-tokens",
        "the API listener's bearer tokens and the tenants each may act for: a YAML file "
        "(tokens: [{name, token, tenants}]) or a directory of mounted token Secrets (keys "
        "token and tenants; tenants '*' is admin); re-read when it changes",
        Path,
    ),
    Option("--identity", "where identity comes from", str, "headers", ("headers", "jwt")),
    Option("--tenant-header", "identity header (headers mode)", str, "x-budget-tenant"),
    Option("--user-header", "identity header (headers mode)", str, "x-budget-user"),
    Option("--tier-header", "identity header (headers mode)", str, "x-budget-tier"),
    Option("--feature-header", "identity header (headers mode)", str, "x-budget-feature"),
    Option("--model-header", "model header, when the body names none", str, "x-budget-model"),
    Option(
        "--anonymous-identity",
        "identity for requests without one, e.g. "
        "tenant=public,user=anonymous (default: answer 401)",
        _identity,
    ),
    Option("--jwt-jwks-file", "JWKS file of the token issuer's keys (jwt mode)", Path),
    Option("--jwt-jwks-url", "JWKS URL of the token issuer's keys (jwt mode)"),
    Option("--jwt-issuer", "required iss claim (jwt mode)"),
    Option("--jwt-audience", "required aud claim (jwt mode)"),
    Option("--jwt-algorithms", "accepted signature algorithms", _csv, ["RS256", "ES256"]),
    Option("--jwt-tenant-claim", "claim holding the tenant", str, "tenant"),
    Option("--jwt-user-claim", "claim holding the user", str, "sub"),
    Option("--jwt-tier-claim", "claim holding the tier", str, "tier"),
    Option("--jwt-feature-claim", "claim holding the feature", str, "feature"),
    Option(
        "--strip-headers",
        "headers to remove from the upstream request on allow "
        "(jwt mode default: the identity headers)",
        _csv,
        [],
    ),
    Option("--host", "listen address", str, ListenSettings.host),
    Option("--check-port", "ext_authz check listener: every method and path", int, 8080),
    Option("--api-port", "API listener: /v1/usage, /v1/budgets, health, metrics", int, 8081),
    Option(
        "--ext-proc-port",
        "gRPC listener: Envoy ext_proc (settles usage from the provider's answer, applies "
        "the model downgrade) and gRPC ext_authz; 0 turns it off",
        int,
        ListenSettings.ext_proc_port,
    ),
    Option("--path-prefix", "prefix Envoy adds to checked paths (path_prefix)", str, ""),
    Option(
        "--max-body-bytes",
        "largest body accepted (size it to Envoy's max_request_bytes)",
        int,
        ListenSettings.max_body_bytes,
    ),
    Option(
        "--max-header-bytes", "largest header line accepted", int, ListenSettings.max_header_bytes
    ),
    Option(
        "--reload-interval-seconds",
        "how often standalone budget files are checked",
        float,
        ConfigSourceSettings.reload_interval_seconds,
    ),
    Option("--metrics-tenants", "tenant label values allowed on spend metrics", _csv, []),
    Option("--metrics-features", "feature label values allowed on spend metrics", _csv, []),
    Option("--metrics-models", "model label values allowed on spend metrics", _csv, []),
    Option(
        "--message-cache-entries",
        "token counts of message texts kept for agent loops "
        "that resend their conversation; with it, a body that continues a recent "
        "turn is read from where that turn ended (0: neither)",
        int,
        50_000,
    ),
    Option(
        "--local-leases",
        "decide most requests in process from budget leased ahead in "
        "Redis (false: one Redis round trip per decision)",
        parse_bool,
        True,
    ),
    Option(
        "--journal-dir",
        "directory of the fail-open journal: what was let through while Redis was away is "
        "written there before the answer and replayed by the next process if this one dies "
        "(a volume; unset: kept in memory only)",
        Path,
    ),
    Option(
        "--user-detail-days",
        "days per-user spend is kept (chargeback by user, per-user templates' history); "
        "aggregates by tenant, feature, model and budget are kept 13 months",
        _positive,
        RetentionSettings.user_detail_days,
    ),
    Option(
        "--settled-stream-length",
        "settled requests kept in the audit stream, at most",
        _positive,
        RetentionSettings.settled_stream_length,
    ),
    Option(
        "--settled-stream-age-hours",
        "settled requests kept in the audit stream, at most this old",
        _positive,
        RetentionSettings.settled_stream_age_hours,
    ),
    Option("--log-level", "DEBUG, INFO, WARNING, ERROR", str, "INFO"),
    Option("--log-allowed", "log every allowed request too", parse_bool, False),
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add every option to ``parser``; an environment variable supplies its default."""
    parser = parser or argparse.ArgumentParser(prog="budget-guard webhook")
    add_options(parser, _OPTIONS)
    return parser
