"""What a budget is: scope, limit, period, thresholds, and how it enforces.

These are the validated, immutable forms. ``domain.manifest`` builds them from
LLMBudget / BurstBudget manifests (the CRD shape), with errors naming the field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from types import MappingProxyType
from zoneinfo import ZoneInfo

from budget_guard.domain.periods import Period, PeriodWindow, period_window

USER_TEMPLATE = "*"
DEFAULT_THRESHOLDS = (70, 80, 90)
HARD_LIMIT_PERCENT = 100


class Enforcement(StrEnum):
    ENFORCE = "Enforce"  # deny requests that do not fit
    OBSERVE = "Observe"  # never block; count and report would-deny


class FailureMode(StrEnum):
    OPEN = "Open"  # allow when the ledger cannot be reached
    CLOSED = "Closed"  # answer 503 when the ledger cannot be reached


class Reservation(StrEnum):
    """What a request reserves before its call; settlement then charges the real cost."""

    # The prompt's tokens and the request's output cap, or the model's typical output
    # when it sets none: a settlement above the estimate can carry spend past the limit.
    ESTIMATE = "Estimate"
    # The model's maximum output when the request sets no cap: settlement can only
    # lower the charge, so the limit holds exactly, at the price of earlier denials.
    WORST_CASE = "WorstCase"


# How many times its usual spend rate a budget must jump to count as an anomaly.
DEFAULT_ANOMALY_FACTOR = 10
MIN_ANOMALY_FACTOR, MAX_ANOMALY_FACTOR = 2, 1000
MAX_DISCOUNT_PERCENT = Decimal(100)

# With failureMode Open and no failOpenLimit: the share of the effective limit each
# webhook replica may let through on a budget during one ledger outage.
DEFAULT_FAIL_OPEN_PERCENT = 5


@dataclass(frozen=True, slots=True, order=True)
class BudgetRef:
    """A budget's identity in the cluster: namespace and name (stable across re-creation)."""

    namespace: str
    name: str
    # "namespace/name", made once: every allowed check names its tightest budget.
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.namespace}/{self.name}")

    def __str__(self) -> str:
        return self.id


SCOPE_FIELDS = ("tenant", "user", "tier", "feature", "model")
# A scope or identity value: it becomes part of Redis keys and of comma-joined HTTP
# headers, so no spaces, commas, braces, stars or control characters. One pattern for
# the parser here and the CRD's CEL rule (RE2 reads it the same way).
SCOPE_VALUE_PATTERN = r"[^\s*{},\x00-\x1f\x7f]{1,253}"
_SCOPE_VALUE = re.compile(SCOPE_VALUE_PATTERN)
SCOPE_VALUE_RULE = "1-253 characters without spaces, commas, braces or stars"


def is_valid_scope_value(value: str) -> bool:
    return _SCOPE_VALUE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Scope:
    """Which requests a budget covers: each field set must match; unset matches anything.

    ``user == "*"`` makes the budget a per-user template: every user gets a quota
    of its own.
    """

    tenant: str | None = None
    user: str | None = None
    tier: str | None = None
    feature: str | None = None
    model: str | None = None

    @property
    def is_user_template(self) -> bool:
        return self.user == USER_TEMPLATE

    @property
    def is_user_level(self) -> bool:
        """Explicit-user budgets and per-user templates compete by specificity."""
        return self.user is not None

    @property
    def user_specificity(self) -> int:
        """Among user-level budgets: explicit user > tier template > generic template."""
        explicit = 0 if self.is_user_template else 2
        return explicit + (1 if self.tier is not None else 0)

    def describe(self, subject: str | None = None) -> str:
        """``tenant=acme,user=*,tier=free``, or with ``subject`` the user a template
        charges in place of ``*``; ``global`` for an empty scope."""
        parts = []
        for name in SCOPE_FIELDS:
            value = getattr(self, name)
            if name == "user" and self.is_user_template and subject is not None:
                value = subject
            if value:
                parts.append(f"{name}={value}")
        return ",".join(parts) if parts else "global"


@dataclass(frozen=True, slots=True)
class SeasonalMultiplier:
    months: frozenset[int]
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class Commitment:
    """Committed use: spend per period bought ahead from the provider at a discount.

    Reported as utilization against ``amount_micros``; what the forecast leaves of it at
    the end of the period would go unused."""

    amount_micros: int
    discount_percent: Decimal = Decimal(0)

    def discount_micros(self, spent_micros: int) -> int:
        """What the discount takes off the spend inside the commitment (whole micro-USD)."""
        covered = min(spent_micros, self.amount_micros)
        return int((covered * self.discount_percent / 100).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class Budget:
    ref: BudgetRef
    scope: Scope
    limit_micros: int
    period: Period
    zone: ZoneInfo
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    enforcement: Enforcement = Enforcement.ENFORCE
    failure_mode: FailureMode = FailureMode.OPEN
    fail_open_limit_micros: int | None = None  # None: DEFAULT_FAIL_OPEN_PERCENT of the limit
    reservation: Reservation = Reservation.ESTIMATE
    degrade_models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    schedule: tuple[SeasonalMultiplier, ...] = ()
    upgrade_url: str | None = None
    commitment: Commitment | None = None
    anomaly_factor: int = DEFAULT_ANOMALY_FACTOR
    uid: str = ""
    generation: int = 0
    created_at: dt.datetime | None = None

    @property
    def id(self) -> str:
        return self.ref.id

    @property
    def enforces(self) -> bool:
        return self.enforcement is Enforcement.ENFORCE

    def window(self, instant: dt.datetime) -> PeriodWindow:
        return period_window(self.period, self.zone, instant)

    def multiplier_for(self, window: PeriodWindow) -> Decimal:
        """The seasonal multiplier of the month in which the period starts (local time)."""
        month = window.first_local_day.month
        for entry in self.schedule:
            if month in entry.months:
                return entry.multiplier
        return Decimal(1)

    def effective_limit(self, window: PeriodWindow) -> int:
        """The limit in force for ``window``: limit x seasonal multiplier, in whole micro-USD."""
        multiplier = self.multiplier_for(window)
        if multiplier == 1:
            return self.limit_micros
        return int((self.limit_micros * multiplier).to_integral_value(rounding=ROUND_FLOOR))

    def fail_open_allowance(self, effective_limit: int) -> int:
        """The most one replica lets through on this budget during one ledger outage."""
        if self.failure_mode is FailureMode.CLOSED:
            return 0
        if self.fail_open_limit_micros is not None:
            return self.fail_open_limit_micros
        return effective_limit * DEFAULT_FAIL_OPEN_PERCENT // HARD_LIMIT_PERCENT

    def threshold_amounts(self, effective_limit: int) -> tuple[int, ...]:
        """Spend at which each soft threshold is reached, rounded up to whole micro-USD."""
        return tuple(
            -(-effective_limit * percent // HARD_LIMIT_PERCENT) for percent in self.thresholds
        )


@dataclass(frozen=True, slots=True)
class BurstPool:
    """Extra money for one budget, approved by a person, inside a time window."""

    ref: BudgetRef
    budget: BudgetRef
    amount_micros: int
    valid_from: dt.datetime
    valid_until: dt.datetime
    approved_by: str
    reason: str = ""
    max_request_micros: int | None = None
    uid: str = ""
    generation: int = 0

    @property
    def id(self) -> str:
        return self.ref.id

    def active_at(self, instant: dt.datetime) -> bool:
        return self.valid_from <= instant < self.valid_until

    def admits(self, cost_micros: int) -> bool:
        """The per-request guard rail: no single request draws more than this."""
        return self.max_request_micros is None or cost_micros <= self.max_request_micros
