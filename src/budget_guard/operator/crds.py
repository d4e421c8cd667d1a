"""The CustomResourceDefinitions, built from the domain's own rules.

Enums, defaults, scope fields and limits come from ``budget_guard.domain``; the
schema adds what the API server can check before the operator sees anything
(types, CEL rules with messages that say what to fix). ``crds/*.yaml`` is this
module's output (``budget-guard crds --write crds``); a test fails when they
drift, and another when the schema and the domain's parser stop reading the same
fields.
"""

from __future__ import annotations

from typing import Any

from budget_guard.domain.budget import (
    DEFAULT_ANOMALY_FACTOR,
    DEFAULT_FAIL_OPEN_PERCENT,
    DEFAULT_THRESHOLDS,
    HARD_LIMIT_PERCENT,
    MAX_ANOMALY_FACTOR,
    MIN_ANOMALY_FACTOR,
    SCOPE_FIELDS,
    SCOPE_VALUE_PATTERN,
    SCOPE_VALUE_RULE,
    Enforcement,
    FailureMode,
    Reservation,
)
from budget_guard.domain.manifest import (
    API_GROUP,
    KIND_BUDGET,
    KIND_BURST,
    MAX_MULTIPLIER,
    VERSION,
)
from budget_guard.domain.money import MAX_DECIMALS
from budget_guard.domain.periods import Period
from budget_guard.operator.status import BudgetState, PoolPhase

CATEGORY = "budgets"

# A positive decimal amount of USD with at most six decimals, as a string.
_AMOUNT = r"^[0-9]+(\.[0-9]{1,6})?$"
_ZERO = r"^0+(\.0+)?$"
_SCOPE_VALUE = f"^{SCOPE_VALUE_PATTERN}$"


def _rule(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


def _matches(pattern: str) -> str:
    """A CEL ``matches`` call; backslashes doubled for the CEL string literal."""
    return "self.matches('" + pattern.replace("\\", "\\\\") + "')"


def _amount(description: str, field: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "maxLength": 32,
        "x-kubernetes-validations": [
            _rule(
                f"{_matches(_AMOUNT)} && !{_matches(_ZERO)}",
                f"{field} must be a positive amount of USD with at most {MAX_DECIMALS} "
                'decimals, written as a string, e.g. "100.00"',
            )
        ],
    }


_SCOPE_DESCRIPTIONS = {
    "tenant": "Only requests of this tenant (a customer or an organisation). Unset: any tenant.",
    "user": 'Only requests of this user; "*" makes a per-user template: every user gets a '
    "limit of their own. Unset: any user.",
    "tier": "Only requests of users on this plan tier (free, pro, ...). Unset: any tier.",
    "feature": "Only requests of this product feature. Unset: any feature.",
    "model": "Only requests for this model, as the request names it. Unset: any model.",
}


def _scope_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name in SCOPE_FIELDS:
        validations = [
            _rule(
                _matches(_SCOPE_VALUE)
                if name != "user"
                else f"self == '*' || {_matches(_SCOPE_VALUE)}",
                f"scope.{name} must be {SCOPE_VALUE_RULE}"
                + (' (or "*" for a per-user template)' if name == "user" else ""),
            )
        ]
        if name != "user":
            validations.insert(
                0,
                _rule(
                    "!self.contains('*')",
                    f'scope.{name} cannot contain "*": "*" is only allowed as the whole '
                    "value of scope.user (a per-user template)",
                ),
            )
        properties[name] = {
            "type": "string",
            "description": _SCOPE_DESCRIPTIONS[name],
            "maxLength": 253,
            "x-kubernetes-validations": validations,
        }
    return {
        "type": "object",
        "description": "Which requests the budget covers: a request counts when every field "
        "set here matches it. No field set: every request (a global budget).",
        "properties": properties,
    }


def _commitment_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Committed use: spend per period bought ahead from the provider at a "
        "discount. The status reports utilization against it, and a Warning Event and an "
        "alert say when the forecast leaves part of it unused.",
        "required": ["amount"],
        "properties": {
            "amount": _amount(
                'The committed spend per period, in USD, as a decimal string such as "5000.00".',
                "commitment.amount",
            ),
            "discountPercent": {
                "type": "string",
                "default": "0",
                "maxLength": 6,
                "description": "The discount the commitment buys, in percent, as a string such "
                'as "20" (0 up to below 100). The report shows what it saved.',
                "x-kubernetes-validations": [
                    _rule(
                        _matches(r"^[0-9]{1,3}(\.[0-9]{1,2})?$") + " && double(self) < 100.0",
                        "commitment.discountPercent must be a percentage from 0 to below 100 "
                        'with at most 2 decimals, written as a string, e.g. "20"',
                    )
                ],
            },
        },
    }


def _anomaly_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "When a jump in spend counts as an anomaly: the last hour or day against "
        "the same hours of the days before (AnomalyDetected, a Warning Event and an alert).",
        "properties": {
            "factor": {
                "type": "integer",
                "default": DEFAULT_ANOMALY_FACTOR,
                "description": "How many times its usual spend rate counts as an anomaly "
                f"({MIN_ANOMALY_FACTOR} to {MAX_ANOMALY_FACTOR}).",
                "x-kubernetes-validations": [
                    _rule(
                        f"self >= {MIN_ANOMALY_FACTOR} && self <= {MAX_ANOMALY_FACTOR}",
                        f"anomaly.factor must be a whole number from {MIN_ANOMALY_FACTOR} to "
                        f"{MAX_ANOMALY_FACTOR}: how many times the usual spend rate is an anomaly "
                        f"(default {DEFAULT_ANOMALY_FACTOR})",
                    )
                ],
            }
        },
    }


def _budget_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What the budget covers, how much it allows per period, and what "
        "happens near and at the limit.",
        "required": ["limit"],
        "x-kubernetes-validations": [
            _rule(
                "!has(self.failOpenLimit) || self.failureMode == 'Open'",
                "failOpenLimit applies only with failureMode: Open; remove it or use Open",
            )
        ],
        "properties": {
            "scope": _scope_schema(),
            "limit": _amount(
                'The hard limit per period, in USD, as a decimal string such as "100.00". '
                "Requests that do not fit are denied (429) in Enforce mode.",
                "limit",
            ),
            "period": {
                "type": "string",
                "enum": [period.value for period in Period],
                "default": Period.MONTHLY.value,
                "description": "The calendar period the limit applies to, aligned to timeZone "
                "(Weekly: ISO weeks from Monday). Spend starts from zero each period.",
            },
            "timeZone": {
                "type": "string",
                "default": "UTC",
                "maxLength": 64,
                "description": "The IANA time zone (e.g. Europe/Berlin) in which periods "
                "start at local midnight. The operator checks it and reports an unknown zone "
                "on the Accepted condition.",
            },
            "thresholds": {
                "type": "array",
                "description": "Soft alerts in percent of the limit, strictly ascending, "
                "each between 0 and 100 (the hard limit is 100). Each crossing raises an Event "
                "and an alert once per period.",
                "default": list(DEFAULT_THRESHOLDS),
                "maxItems": 20,
                "items": {"type": "integer"},
                "x-kubernetes-validations": [
                    _rule(
                        "self.all(t, t > 0 && t < 100)",
                        "thresholds are percentages strictly between 0 and 100 (100 is the "
                        "hard limit), e.g. [70, 80, 90]",
                    ),
                    _rule(
                        "self.isSorted() && self.all(t, self.exists_one(u, u == t))",
                        "thresholds must be strictly ascending, e.g. [70, 80, 90]",
                    ),
                ],
            },
            "enforcement": {
                "type": "string",
                "enum": [mode.value for mode in Enforcement],
                "default": Enforcement.ENFORCE.value,
                "description": "Enforce: deny requests that do not fit. Observe: never deny; "
                "count spend and report would-deny (x-budget-would-deny).",
            },
            "failureMode": {
                "type": "string",
                "enum": [mode.value for mode in FailureMode],
                "default": FailureMode.OPEN.value,
                "description": "When the ledger (Redis) cannot be reached: Open allows the "
                "request and records its spend once Redis is back; Closed answers 503.",
            },
            "failOpenLimit": _amount(
                "With failureMode Open: the most each webhook replica lets through on this "
                "budget during one ledger outage, in USD; past it the budget fails closed "
                f"(default: {DEFAULT_FAIL_OPEN_PERCENT}% of the limit)",
                "failOpenLimit",
            ),
            "reservation": {
                "type": "string",
                "enum": [mode.value for mode in Reservation],
                "default": Reservation.ESTIMATE.value,
                "description": "What a request reserves before its call: Estimate (its "
                "output cap, or the model's typical output when it sets none; a settlement "
                "above the estimate can end past the limit) or WorstCase (the model's "
                "maximum output when it sets none: the limit holds exactly, denials come "
                "earlier)",
            },
            "onSoftLimit": {
                "type": "object",
                "description": "What the webhook suggests once the first soft threshold is "
                "reached.",
                "properties": {
                    "degradeModels": {
                        "type": "object",
                        "description": "Model to cheaper model (gpt-4o: gpt-4o-mini). Past the "
                        "first threshold, allowed requests for a listed model carry "
                        "x-budget-model-override with the cheaper one.",
                        "maxProperties": 64,
                        "additionalProperties": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 200,
                        },
                        "x-kubernetes-validations": [
                            _rule(
                                "self.all(model, self[model] != model)",
                                "degradeModels must map each model to a different, cheaper one",
                            )
                        ],
                    }
                },
            },
            "schedule": {
                "type": "array",
                "description": "Seasonal multipliers of the limit, chosen by the month (in "
                "timeZone) in which the period starts.",
                "maxItems": 12,
                "items": {
                    "type": "object",
                    "description": "One multiplier and the months it applies to.",
                    "required": ["months", "multiplier"],
                    "properties": {
                        "months": {
                            "type": "array",
                            "description": "Months 1 to 12 in which a period starting gets the "
                            "multiplier.",
                            "minItems": 1,
                            "maxItems": 12,
                            "items": {"type": "integer", "minimum": 1, "maximum": 12},
                        },
                        "multiplier": {
                            "type": "string",
                            "description": 'The limit is multiplied by this decimal, e.g. "2.0" '
                            f"(above 0, at most {MAX_MULTIPLIER}).",
                            "maxLength": 16,
                            "x-kubernetes-validations": [
                                _rule(
                                    _matches(r"^[0-9]+(\.[0-9]+)?$")
                                    + f" && double(self) > 0.0 && double(self) <= "
                                    f"{float(MAX_MULTIPLIER)}",
                                    f"multiplier must be a decimal above 0 and at most "
                                    f'{MAX_MULTIPLIER}, written as a string, e.g. "2.0"',
                                )
                            ],
                        },
                    },
                },
            },
            "commitment": _commitment_schema(),
            "anomaly": _anomaly_schema(),
            "upgradeURL": {
                "type": "string",
                "description": "An http(s) URL shown in the 429 answer (upgrade_url) to whoever "
                "reaches the limit.",
                "maxLength": 2048,
                "x-kubernetes-validations": [
                    _rule(_matches("^https?://"), "upgradeURL must be an http(s) URL")
                ],
            },
            "alerts": {
                "type": "object",
                "description": "Where threshold crossings, exhaustion and burst-pool events are "
                "also posted, besides the Kubernetes Events. The outcome shows on the "
                "AlertsReady condition.",
                "required": ["secretRef"],
                "properties": {
                    "secretRef": {
                        "type": "object",
                        "description": "The Secret holding the URL alerts are posted to. The "
                        "operator reads Secrets only in the namespaces it is allowed to "
                        "(--alert-secret-namespace); elsewhere AlertsReady says so.",
                        "required": ["name"],
                        "properties": {
                            "name": {
                                "type": "string",
                                "minLength": 1,
                                "description": "The Secret's name.",
                            },
                            "namespace": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 63,
                                "description": "The Secret's namespace. Unset: the budget's "
                                "own namespace.",
                            },
                            "key": {
                                "type": "string",
                                "default": "url",
                                "description": "The key in the Secret whose value is the URL.",
                            },
                        },
                    },
                    "format": {
                        "type": "string",
                        "enum": ["Slack", "Generic"],
                        "default": "Generic",
                        "description": 'Slack: {"text": ...}, for Slack-compatible incoming '
                        "webhooks. Generic: a JSON object with budget, reason, message, period, "
                        "threshold, usedUsd and limitUsd.",
                    },
                },
            },
        },
    }


def _burst_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The budget the pool extends, how much, when, and who approved it.",
        "required": ["budgetRef", "amount", "validFrom", "validUntil", "approvedBy"],
        "x-kubernetes-validations": [
            _rule(
                "timestamp(self.validUntil) > timestamp(self.validFrom)",
                "validUntil must be after validFrom",
            )
        ],
        "properties": {
            "budgetRef": {
                "type": "object",
                "description": "The LLMBudget, in this namespace, that the pool extends. The "
                "pool is drawn from only once that budget's limit is reached.",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "description": "Its name."}
                },
            },
            "amount": _amount(
                'The extra money, in USD, as a decimal string such as "500.00".', "amount"
            ),
            "validFrom": {
                "type": "string",
                "format": "date-time",
                "description": "When the pool opens (RFC 3339, e.g. 2026-11-27T00:00:00Z).",
            },
            "validUntil": {
                "type": "string",
                "format": "date-time",
                "description": "When the pool closes (RFC 3339); after it the pool is Expired.",
            },
            "approvedBy": {
                "type": "string",
                "description": "Who approved the extra spend (a person or a ticket); shown in "
                "status.review.",
                "maxLength": 253,
                "x-kubernetes-validations": [
                    _rule(
                        "self.trim().size() > 0",
                        "approvedBy must name who approved the burst",
                    )
                ],
            },
            "reason": {
                "type": "string",
                "maxLength": 1024,
                "description": "Why the pool exists, e.g. Black Friday traffic.",
            },
            "maxRequestCost": _amount(
                "A guard rail: no single request draws more than this from the pool, in USD.",
                "maxRequestCost",
            ),
        },
    }


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _instant(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "date-time", "description": description}


def _count(description: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", "minimum": 0, "description": description}


def _usd(description: str) -> dict[str, Any]:
    return _text(description + ' In USD, as a decimal string such as "12.50".')


def _object(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _list(description: str, item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": item, **extra}


# As metav1.Condition has it, so that tools that read conditions (kubectl wait, Argo CD,
# kstatus) find what they expect.
_CONDITION = _object(
    "One aspect of the resource's state, as metav1.Condition.",
    {
        "type": _text(
            "The aspect: Accepted, Enforced, Ready, SoftLimitReached, Exhausted, BurstActive, "
            "ForecastExceedsLimit, AnomalyDetected or AlertsReady.",
            maxLength=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
        "status": _text("True, False or Unknown.", enum=["True", "False", "Unknown"]),
        "reason": _text(
            "A CamelCase word for why the status is what it is (e.g. LimitReached).",
            minLength=1,
            maxLength=1024,
            pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        ),
        "message": _text("What a person needs to know, and what to fix.", maxLength=32768),
        "lastTransitionTime": _instant("When the status last changed."),
        "observedGeneration": {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "description": "The metadata.generation the condition was set from.",
        },
    },
    required=["type", "status", "reason", "message", "lastTransitionTime"],
)


def _status(description: str, extra: dict[str, Any]) -> dict[str, Any]:
    return _object(
        description,
        {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The metadata.generation this status was written for.",
            },
            "conditions": _list(
                "The resource's conditions, one per type.",
                _CONDITION,
                **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
            ),
            **extra,
        },
    )


def _budget_status() -> dict[str, Any]:
    return _status(
        "Written by the operator: validation, enforcement and spend in the current period.",
        {
            "state": _text(
                "Where the budget stands: Pending (this generation is not enforced yet), Ok, "
                "SoftLimit (past a soft threshold: see thresholdReached), Exhausted "
                "(requests are denied until the period resets), UsersExhausted (a per-user "
                "template some of whose users used their quota) or Rejected (see Accepted).",
                enum=[state.value for state in BudgetState],
            ),
            "summary": _text(
                "The Status column: the state in words (Ok, SoftLimit 80%, Exhausted, "
                '"3 users exhausted", ...).'
            ),
            "thresholdReached": {
                "type": "integer",
                "minimum": 0,
                "maximum": HARD_LIMIT_PERCENT,
                "description": "The highest threshold reached this period, in percent: 0 "
                "below the first, a soft threshold, or 100 when the limit is reached.",
            },
            "scopeSummary": _text("The Scope column: the scope as tenant=...,user=..., or global."),
            "periodKey": _text(
                "The current period: 2026-11-28, 2026-W48, 2026-11, 2026-Q4 or 2026."
            ),
            "periodStart": _instant("When the current period began (UTC)."),
            "resetsAt": _instant("When the current period ends and spend starts from zero."),
            "effectiveLimit": _usd("The limit times this period's seasonal multiplier."),
            "spent": _usd("Settled spend this period."),
            "reserved": _usd("Held by requests in flight, not settled yet."),
            "remaining": _usd("Left for new requests."),
            "utilization": _text(
                "(spent + reserved) / effectiveLimit, as a decimal string (0.7250)."
            ),
            "utilizationPercent": _text("The Used column: utilization in percent (72.5%)."),
            "users": _object(
                "Per-user templates only: the users seen this period.",
                {
                    "tracked": _count("Users with spend this period."),
                    "exhausted": _count("Users who have used their whole limit."),
                    "top": _list(
                        "The five users with the most spend.",
                        _object(
                            "A user and their spend.",
                            {
                                "user": _text("The user."),
                                "spent": _usd("Their spend this period."),
                            },
                        ),
                        maxItems=5,
                    ),
                },
            ),
            "forecast": _object(
                "The end of the period projected from the burn rate (weekday-shaped, trend "
                "and seasonal schedule aware; docs/reports.md). Not for per-user templates.",
                {
                    "summary": _text(
                        "The Forecast column: the projected spend, and the day the limit would "
                        "be reached, or why there is no forecast."
                    ),
                    "spend": _usd("Projected spend at the end of the period."),
                    "limitDate": _text(
                        "The local day (YYYY-MM-DD) the limit is projected to be reached, when "
                        "that is before the period ends."
                    ),
                    "basis": _text("What the projection rests on: days of history and shape."),
                    "message": _text("Why there is no forecast (too little history)."),
                },
            ),
            "review": _object(
                "The monthly review's figures (budget-guard report and kubectl llmbudget "
                "report read them).",
                {
                    "days": _list(
                        "Settled spend per local day of the current period, from periodStart "
                        "(today so far).",
                        _usd("One day's spend."),
                    ),
                    "yearToDate": _usd("Settled spend since January 1 (local time)."),
                    "previousPeriod": _usd("Settled spend of the whole previous period."),
                    "previousPeriodToDate": _usd(
                        "The previous period's spend over as many days as this period has "
                        "completed: what the trend compares with."
                    ),
                    "trend": _text('Against the previous period: "up 20 %", "down 5 %", flat.'),
                    "action": _text(
                        "The suggested action: OK, monitor, request +$N, hard limit active."
                    ),
                },
            ),
            "commitment": _object(
                "Spend against spec.commitment this period.",
                {
                    "amount": _usd("The committed spend per period."),
                    "used": _usd("Spent this period, against the commitment."),
                    "utilization": _text("used / amount, in percent (64.0 %)."),
                    "projectedUnused": _usd("What the forecast leaves unused at the period's end."),
                    "discount": _usd("What the commitment's discount took off this period."),
                    "summary": _text("Utilization in words, and what would go unused."),
                },
            ),
            "burstPools": _list(
                "The BurstBudgets that extend this budget and are valid now.",
                _object(
                    "A burst pool and what is left of it.",
                    {
                        "name": _text("The BurstBudget's name."),
                        "amount": _usd("The pool's amount."),
                        "used": _usd("Drawn from the pool."),
                        "remaining": _usd("Left in the pool."),
                        "validUntil": _instant("When the pool closes."),
                    },
                ),
            ),
        },
    )


def _burst_status() -> dict[str, Any]:
    return _status(
        "Written by the operator: validation, phase, use, and the review once it ended.",
        {
            "phase": _text(
                "Pending (before validFrom), Active, Exhausted (its amount is spent) or "
                "Expired (past validUntil).",
                enum=[phase.value for phase in PoolPhase],
            ),
            "spent": _usd("Drawn from the pool."),
            "remaining": _usd("Left in the pool."),
            "requests": _count("Requests the pool paid for."),
            "review": _object(
                "The post-spend analysis, recorded once when the pool ends.",
                {
                    "spent": _usd("Drawn from the pool in all."),
                    "requests": _count("Requests the pool paid for."),
                    "peakDay": _text("The day (YYYY-MM-DD) the budget spent the most."),
                    "peakDaySpent": _usd("The budget's spend on that day."),
                    "approvedBy": _text("Who approved the pool (from spec.approvedBy)."),
                    "reason": _text("Why the pool existed (from spec.reason)."),
                    "endedAt": _instant("When the pool ended: exhausted or expired."),
                },
            ),
        },
    )


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    """A printer column. Times to come are "string" columns: kubectl prints a "date"
    column in the future as <invalid>."""
    return {"name": name, "type": kind, "jsonPath": path, **extra}


def _crd(
    kind: str,
    plural: str,
    short: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def llmbudget_crd() -> dict[str, Any]:
    return _crd(
        KIND_BUDGET,
        "llmbudgets",
        "llmb",
        _budget_spec(),
        _budget_status(),
        [
            _column("Scope", ".status.scopeSummary"),
            _column("Limit", ".spec.limit"),
            _column("Period", ".spec.period"),
            _column("Spent", ".status.spent"),
            _column("Used", ".status.utilizationPercent"),
            _column("Status", ".status.summary"),
            _column("Forecast", ".status.forecast.summary"),
            _column("Action", ".status.review.action", priority=1),
            _column("Resets", ".status.resetsAt"),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
        "A hard limit on LLM spending per period, for the requests its scope covers.",
    )


def burstbudget_crd() -> dict[str, Any]:
    return _crd(
        KIND_BURST,
        "burstbudgets",
        "bb",
        _burst_spec(),
        _burst_status(),
        [
            _column("Budget", ".spec.budgetRef.name"),
            _column("Amount", ".spec.amount"),
            _column("Spent", ".status.spent"),
            _column("Phase", ".status.phase"),
            _column("Valid From", ".spec.validFrom"),
            _column("Valid Until", ".spec.validUntil"),
            _column("Approved By", ".spec.approvedBy"),
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
        "Extra money for one LLMBudget, approved by a person, inside a time window.",
    )


def kopf_peering_crd(cluster_wide: bool) -> dict[str, Any]:
    """Where operator replicas announce themselves (Kopf peering): one active at a time."""
    kind = "ClusterKopfPeering" if cluster_wide else "KopfPeering"
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": "Cluster" if cluster_wide else "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Replicas of a Kopf operator and their priorities.",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name under crds/ -> CRD."""
    return {
        "llmbudgets.budgetguard.io.yaml": llmbudget_crd(),
        "burstbudgets.budgetguard.io.yaml": burstbudget_crd(),
        "clusterkopfpeerings.kopf.dev.yaml": kopf_peering_crd(cluster_wide=True),
        "kopfpeerings.kopf.dev.yaml": kopf_peering_crd(cluster_wide=False),
    }
