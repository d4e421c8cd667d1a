"""Status conditions of LLMBudget and BurstBudget: types and reasons as constants.

Conditions follow metav1.Condition: type, status, reason, message,
lastTransitionTime (kept while the status does not change) and observedGeneration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from budget_guard.domain.instants import rfc3339


class Condition(TypedDict):
    """metav1.Condition, as the CRDs' status schema has it."""

    type: str
    status: str  # True, False or Unknown
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


ACCEPTED = "Accepted"
ENFORCED = "Enforced"
READY = "Ready"
SOFT_LIMIT_REACHED = "SoftLimitReached"
EXHAUSTED = "Exhausted"
BURST_ACTIVE = "BurstActive"
ALERTS_READY = "AlertsReady"
FORECAST_EXCEEDS_LIMIT = "ForecastExceedsLimit"
ANOMALY_DETECTED = "AnomalyDetected"

# Reasons
VALID = "Valid"
INVALID_SPEC = "InvalidSpec"
INVALID_TIME_ZONE = "InvalidTimeZone"
DUPLICATE_SCOPE = "DuplicateScope"
BUDGET_NOT_FOUND = "BudgetNotFound"
PUBLISHED = "Published"
NOT_PUBLISHED = "NotPublished"
REJECTED = "Rejected"
LEDGER_UNAVAILABLE = "LedgerUnavailable"  # Redis cannot be reached: nothing is enforced
BELOW_THRESHOLDS = "BelowThresholds"
WITHIN_LIMIT = "WithinLimit"
LIMIT_REACHED = "LimitReached"
NO_ACTIVE_BURST = "NoActiveBurst"
BURST_POOL_ACTIVE = "BurstPoolActive"
NO_ALERTS = "NoAlertsConfigured"
ALERTS_CONFIGURED = "AlertsConfigured"
SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a secret
SECRET_NAMESPACE_NOT_ALLOWED = "SecretNamespaceNotAllowed"  # noqa: S105
DELIVERY_FAILED = "AlertDeliveryFailed"
DELIVERED = "AlertDelivered"
PROJECTED_OVER_LIMIT = "ProjectedOverLimit"
PROJECTED_WITHIN_LIMIT = "ProjectedWithinLimit"
INSUFFICIENT_HISTORY = "InsufficientHistory"
SPEND_JUMP = "SpendJump"
USUAL_SPEND = "UsualSpend"
INSUFFICIENT_BASELINE = "InsufficientBaseline"

# Event reasons (on the LLMBudget)
EVENT_SOFT_LIMIT = "SoftLimitReached"
EVENT_EXHAUSTED = "BudgetExhausted"
EVENT_PERIOD_RESET = "PeriodReset"
EVENT_BURST_ACTIVATED = "BurstActivated"
EVENT_BURST_EXHAUSTED = "BurstExhausted"
EVENT_LEDGER_RESTORED = "LedgerRestored"
EVENT_FORECAST_EXCEEDS_LIMIT = "ForecastExceedsLimit"
EVENT_ANOMALY = "AnomalyDetected"
EVENT_COMMITMENT_UNUSED = "CommitmentUnused"
EVENT_LEDGER_UNAVAILABLE = "LedgerUnavailable"


def threshold_reason(percent: int) -> str:
    return f"Threshold{percent}Reached"


def condition(
    kind: str,
    true: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: dt.datetime,
) -> Condition:
    """A condition, keeping its lastTransitionTime while its status stays the same."""
    status = "True" if true else "False"
    transition = rfc3339(now)
    for old in previous:
        if old.get("type") == kind and old.get("status") == status:
            transition = str(old.get("lastTransitionTime") or transition)
            break
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
