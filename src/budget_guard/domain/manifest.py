"""LLMBudget and BurstBudget manifests (the CRD shape) into validated domain objects.

The same rules the API server applies through the CRD schema and its CEL rules,
plus what CEL cannot check (a real IANA zone). Every error is a ``ManifestError``
(a ``ValueError``) whose message starts with the field path, e.g. ``spec.limit: ...``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypeVar

from budget_guard.domain.budget import (
    DEFAULT_ANOMALY_FACTOR,
    DEFAULT_THRESHOLDS,
    HARD_LIMIT_PERCENT,
    MAX_ANOMALY_FACTOR,
    MAX_DISCOUNT_PERCENT,
    MIN_ANOMALY_FACTOR,
    SCOPE_FIELDS,
    SCOPE_VALUE_RULE,
    USER_TEMPLATE,
    Budget,
    BudgetRef,
    BurstPool,
    Commitment,
    Enforcement,
    FailureMode,
    Reservation,
    Scope,
    SeasonalMultiplier,
    is_valid_scope_value,
)
from budget_guard.domain.money import InvalidAmount, parse_usd
from budget_guard.domain.periods import Period, load_zone

API_GROUP = "budgetguard.io"
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
KIND_BUDGET = "LLMBudget"
KIND_BURST = "BurstBudget"
DEFAULT_NAMESPACE = "default"
MAX_MULTIPLIER = Decimal(10)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ManifestError(ValueError):
    """An invalid manifest; ``field`` is the path of the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class ParsedManifests:
    budgets: tuple[Budget, ...]
    pools: tuple[BurstPool, ...]


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(field, f"must be an object, got {type(value).__name__}")
    return value


def _string(value: object, field: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise ManifestError(field, "is required")
        return None
    if not isinstance(value, str):
        raise ManifestError(field, f"must be a string, got {value!r}")
    return value


_E = TypeVar("_E", Period, Enforcement, FailureMode, Reservation)


def _enum(enum: type[_E], value: object, field: str, default: _E) -> _E:
    if value is None:
        return default
    allowed = ", ".join(member.value for member in enum)
    if not isinstance(value, str) or value not in allowed.split(", "):
        raise ManifestError(field, f"must be one of {allowed}, got {value!r}")
    return enum(value)


def _created_at(manifest: Mapping[str, Any]) -> dt.datetime | None:
    created = _mapping(manifest.get("metadata"), "metadata").get("creationTimestamp")
    return None if created is None else parse_instant(created, "metadata.creationTimestamp")


def _metadata_ref(manifest: Mapping[str, Any]) -> tuple[BudgetRef, str, int]:
    metadata = _mapping(manifest.get("metadata"), "metadata")
    name = _string(metadata.get("name"), "metadata.name", required=True)
    namespace = _string(metadata.get("namespace"), "metadata.namespace") or DEFAULT_NAMESPACE
    assert name is not None
    for field, value in (("metadata.name", name), ("metadata.namespace", namespace)):
        if len(value) > 253 or not _DNS_LABEL.fullmatch(value):
            raise ManifestError(field, f"must be a lower-case DNS name, got {value!r}")
    uid = _string(metadata.get("uid"), "metadata.uid") or ""
    generation = metadata.get("generation") or 0
    if not isinstance(generation, int):
        raise ManifestError("metadata.generation", f"must be an integer, got {generation!r}")
    return BudgetRef(namespace, name), uid, generation


def _kind(manifest: Mapping[str, Any], expected: str) -> None:
    kind = manifest.get("kind")
    if kind != expected:
        raise ManifestError("kind", f"must be {expected}, got {kind!r}")
    api_version = manifest.get("apiVersion")
    if api_version is not None and api_version != API_VERSION:
        raise ManifestError("apiVersion", f"must be {API_VERSION}, got {api_version!r}")


def parse_scope(value: object, field: str = "spec.scope") -> Scope:
    raw = _mapping(value, field)
    unknown = sorted(set(raw) - set(SCOPE_FIELDS))
    if unknown:
        raise ManifestError(
            f"{field}.{unknown[0]}", f"unknown scope field; use {', '.join(SCOPE_FIELDS)}"
        )
    values: dict[str, str | None] = {}
    for name in SCOPE_FIELDS:
        text = _string(raw.get(name), f"{field}.{name}")
        if text is not None and not (name == "user" and text == USER_TEMPLATE):
            if "*" in text:
                raise ManifestError(
                    f"{field}.{name}",
                    '"*" is only allowed as the whole value of user (a per-user template)',
                )
            if not is_valid_scope_value(text):
                raise ManifestError(f"{field}.{name}", f"must be {SCOPE_VALUE_RULE}, got {text!r}")
        values[name] = text
    return Scope(**values)


def parse_thresholds(value: object, field: str = "spec.thresholds") -> tuple[int, ...]:
    if value is None:
        return DEFAULT_THRESHOLDS
    if not isinstance(value, list):
        raise ManifestError(field, f"must be a list of percentages, got {value!r}")
    thresholds: list[int] = []
    for index, item in enumerate(value):
        item_field = f"{field}[{index}]"
        if isinstance(item, bool) or not isinstance(item, int):
            raise ManifestError(item_field, f"must be a whole percentage, got {item!r}")
        if not 0 < item < HARD_LIMIT_PERCENT:
            raise ManifestError(
                item_field, f"must be between 1 and 99 (the hard limit is 100), got {item}"
            )
        if thresholds and item <= thresholds[-1]:
            raise ManifestError(
                item_field,
                f"thresholds must be strictly ascending, got {item} after {thresholds[-1]}",
            )
        thresholds.append(item)
    return tuple(thresholds)


def parse_multiplier(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ManifestError(field, f'must be a decimal string like "2.0", got {value!r}')
    try:
        multiplier = Decimal(str(value))
    except InvalidOperation:
        raise ManifestError(field, f'must be a decimal string like "2.0", got {value!r}') from None
    if not multiplier.is_finite() or not 0 < multiplier <= MAX_MULTIPLIER:
        raise ManifestError(field, f"must be above 0 and at most {MAX_MULTIPLIER}, got {value!r}")
    return multiplier


def parse_schedule(value: object, field: str = "spec.schedule") -> tuple[SeasonalMultiplier, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ManifestError(field, "must be a list of {months, multiplier}")
    seen: set[int] = set()
    entries = []
    for index, raw_entry in enumerate(value):
        entry = _mapping(raw_entry, f"{field}[{index}]")
        months = entry.get("months")
        months_field = f"{field}[{index}].months"
        if not isinstance(months, list) or not months:
            raise ManifestError(months_field, "must be a non-empty list of months (1-12)")
        for month in months:
            if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
                raise ManifestError(months_field, f"months are 1-12, got {month!r}")
            if month in seen:
                raise ManifestError(months_field, f"month {month} appears in two schedule entries")
            seen.add(month)
        multiplier = parse_multiplier(entry.get("multiplier"), f"{field}[{index}].multiplier")
        entries.append(SeasonalMultiplier(frozenset(months), multiplier))
    return tuple(entries)


def parse_degrade_models(value: object, field: str) -> Mapping[str, str]:
    raw = _mapping(value, field)
    mapping: dict[str, str] = {}
    for source, target in raw.items():
        if not isinstance(source, str) or not source:
            raise ManifestError(field, f"model names must be non-empty strings, got {source!r}")
        if not isinstance(target, str) or not target or target == source:
            raise ManifestError(
                f"{field}.{source}", f"must name a different, cheaper model, got {target!r}"
            )
        mapping[source] = target
    return MappingProxyType(mapping)


def _url(value: object, field: str) -> str | None:
    text = _string(value, field)
    if text is not None and not re.fullmatch(r"https?://\S+", text):
        raise ManifestError(field, f"must be an http(s) URL, got {text!r}")
    return text


def _money(value: object, field: str, *, required: bool = True) -> int | None:
    if value is None:
        if required:
            raise ManifestError(field, 'is required (a decimal string of USD, e.g. "100.00")')
        return None
    try:
        return parse_usd(value, field)
    except InvalidAmount as error:
        raise ManifestError(field, str(error).split(": ", 1)[1]) from None


_PERCENT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,2})?")


def parse_commitment(value: object, field: str = "spec.commitment") -> Commitment | None:
    """Committed use: ``{amount: "5000.00", discountPercent: "20"}`` (the discount optional)."""
    if value is None:
        return None
    raw = _mapping(value, field)
    unknown = sorted(set(raw) - {"amount", "discountPercent"})
    if unknown:
        raise ManifestError(f"{field}.{unknown[0]}", "unknown field; use amount, discountPercent")
    amount = _money(raw.get("amount"), f"{field}.amount")
    assert amount is not None
    discount = raw.get("discountPercent", "0")
    if isinstance(discount, bool) or not isinstance(discount, (str, int)):
        raise ManifestError(
            f"{field}.discountPercent", f'must be a percentage string like "20", got {discount!r}'
        )
    text = str(discount).strip()
    if not _PERCENT.fullmatch(text) or Decimal(text) >= MAX_DISCOUNT_PERCENT:
        raise ManifestError(
            f"{field}.discountPercent",
            f'must be a percentage from 0 to below 100 with at most 2 decimals, e.g. "20", '
            f"got {discount!r}",
        )
    return Commitment(amount, Decimal(text))


def parse_anomaly_factor(value: object, field: str = "spec.anomaly") -> int:
    """``spec.anomaly.factor``: how many times the usual rate is an anomaly (default 10)."""
    raw = _mapping(value, field)
    unknown = sorted(set(raw) - {"factor"})
    if unknown:
        raise ManifestError(f"{field}.{unknown[0]}", "unknown field; use factor")
    factor = raw.get("factor", DEFAULT_ANOMALY_FACTOR)
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int)
        or not MIN_ANOMALY_FACTOR <= factor <= MAX_ANOMALY_FACTOR
    ):
        raise ManifestError(
            f"{field}.factor",
            f"must be a whole number from {MIN_ANOMALY_FACTOR} to {MAX_ANOMALY_FACTOR}, "
            f"got {factor!r}",
        )
    return factor


def _fail_open_limit(spec: Mapping[str, Any]) -> int | None:
    value = spec.get("failOpenLimit")
    if value is None:
        return None
    if spec.get("failureMode") == FailureMode.CLOSED.value:
        raise ManifestError(
            "spec.failOpenLimit", "applies only with failureMode: Open; remove it or use Open"
        )
    return _money(value, "spec.failOpenLimit")


def parse_budget(manifest: Mapping[str, Any]) -> Budget:
    """An LLMBudget manifest as a ``Budget``; ``ManifestError`` names the bad field."""
    _kind(manifest, KIND_BUDGET)
    ref, uid, generation = _metadata_ref(manifest)
    spec = _mapping(manifest.get("spec"), "spec")
    if not spec:
        raise ManifestError("spec", "is required")
    limit = _money(spec.get("limit"), "spec.limit")
    assert limit is not None
    zone_name = _string(spec.get("timeZone"), "spec.timeZone") or "UTC"
    try:
        zone = load_zone(zone_name, "spec.timeZone")
    except ValueError as error:
        raise ManifestError("spec.timeZone", str(error).split(": ", 1)[1]) from None
    on_soft_limit = _mapping(spec.get("onSoftLimit"), "spec.onSoftLimit")
    return Budget(
        ref=ref,
        uid=uid,
        generation=generation,
        scope=parse_scope(spec.get("scope")),
        limit_micros=limit,
        period=_enum(Period, spec.get("period"), "spec.period", Period.MONTHLY),
        zone=zone,
        thresholds=parse_thresholds(spec.get("thresholds")),
        enforcement=_enum(
            Enforcement, spec.get("enforcement"), "spec.enforcement", Enforcement.ENFORCE
        ),
        failure_mode=_enum(
            FailureMode, spec.get("failureMode"), "spec.failureMode", FailureMode.OPEN
        ),
        fail_open_limit_micros=_fail_open_limit(spec),
        reservation=_enum(
            Reservation, spec.get("reservation"), "spec.reservation", Reservation.ESTIMATE
        ),
        degrade_models=parse_degrade_models(
            on_soft_limit.get("degradeModels"), "spec.onSoftLimit.degradeModels"
        ),
        schedule=parse_schedule(spec.get("schedule")),
        upgrade_url=_url(spec.get("upgradeURL"), "spec.upgradeURL"),
        commitment=parse_commitment(spec.get("commitment")),
        anomaly_factor=parse_anomaly_factor(spec.get("anomaly")),
        created_at=_created_at(manifest),
    )


def parse_instant(value: object, field: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        instant = value
    elif isinstance(value, str):
        try:
            instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ManifestError(
                field, f"must be an RFC 3339 time like 2026-12-01T00:00:00Z, got {value!r}"
            ) from None
    else:
        raise ManifestError(field, f"is required: an RFC 3339 time, got {value!r}")
    if instant.tzinfo is None:
        raise ManifestError(field, f"must include a zone offset (e.g. Z), got {value!r}")
    return instant.astimezone(dt.UTC)


def parse_burst_budget(manifest: Mapping[str, Any]) -> BurstPool:
    """A BurstBudget manifest as a ``BurstPool``; ``ManifestError`` names the bad field."""
    _kind(manifest, KIND_BURST)
    ref, uid, generation = _metadata_ref(manifest)
    spec = _mapping(manifest.get("spec"), "spec")
    budget_ref = _mapping(spec.get("budgetRef"), "spec.budgetRef")
    budget_name = _string(budget_ref.get("name"), "spec.budgetRef.name", required=True)
    assert budget_name is not None
    valid_from = parse_instant(spec.get("validFrom"), "spec.validFrom")
    valid_until = parse_instant(spec.get("validUntil"), "spec.validUntil")
    if valid_until <= valid_from:
        raise ManifestError("spec.validUntil", "must be after spec.validFrom")
    approved_by = _string(spec.get("approvedBy"), "spec.approvedBy")
    if approved_by is None or not approved_by.strip():
        raise ManifestError("spec.approvedBy", "is required: who approved this burst")
    amount = _money(spec.get("amount"), "spec.amount")
    assert amount is not None
    return BurstPool(
        ref=ref,
        uid=uid,
        generation=generation,
        budget=BudgetRef(ref.namespace, budget_name),
        amount_micros=amount,
        valid_from=valid_from,
        valid_until=valid_until,
        approved_by=approved_by.strip(),
        reason=_string(spec.get("reason"), "spec.reason") or "",
        max_request_micros=_money(
            spec.get("maxRequestCost"), "spec.maxRequestCost", required=False
        ),
    )


def parse_manifests(documents: Iterable[object], source: str = "") -> ParsedManifests:
    """Every LLMBudget and BurstBudget in ``documents``; other kinds are an error.

    ``source`` (a file name) prefixes each error, so one bad document is easy to find.
    """
    budgets: list[Budget] = []
    pools: list[BurstPool] = []
    prefix = f"{source}: " if source else ""
    for index, document in enumerate(documents):
        if document is None:
            continue
        where = f"{prefix}document {index + 1}"
        if not isinstance(document, Mapping):
            raise ValueError(f"{where}: must be a manifest object")
        kind = document.get("kind")
        try:
            if kind == KIND_BUDGET:
                budgets.append(parse_budget(document))
            elif kind == KIND_BURST:
                pools.append(parse_burst_budget(document))
            else:
                raise ManifestError("kind", f"must be {KIND_BUDGET} or {KIND_BURST}, got {kind!r}")
        except ManifestError as error:
            name = _mapping(document.get("metadata"), "metadata").get("name", "?")
            raise ManifestError(f"{where} ({kind} {name}) {error.field}", error.problem) from None
    return ParsedManifests(tuple(budgets), tuple(pools))
