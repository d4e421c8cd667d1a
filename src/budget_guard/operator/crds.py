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
    DEFAULT_FAIL_OPEN_PERCENT,
    DEFAULT_THRESHOLDS,
    SCOPE_FIELDS,
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

CATEGORY = "budgets"

# A positive decimal amount of USD with at most six decimals, as a string.
_AMOUNT = r"^[0-9]+(\.[0-9]{1,6})?$"
_ZERO = r"^0+(\.0+)?$"
_SCOPE_VALUE = r"^[^\s*{},]{1,253}$"


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
            "maxLength": 253,
            "x-kubernetes-validations": validations,
        }
    properties["user"]["description"] = 'a user, or "*" for every user separately'
    return {
        "type": "object",
        "description": "Which requests the budget covers; every field set must match.",
        "properties": properties,
    }


def _budget_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["limit"],
        "x-kubernetes-validations": [
            _rule(
                "!has(self.failOpenLimit) || self.failureMode == 'Open'",
                "failOpenLimit applies only with failureMode: Open; remove it or use Open",
            )
        ],
        "properties": {
            "scope": _scope_schema(),
            "limit": _amount("the hard limit per period, in USD", "limit"),
            "period": {
                "type": "string",
                "enum": [period.value for period in Period],
                "default": Period.MONTHLY.value,
            },
            "timeZone": {
                "type": "string",
                "default": "UTC",
                "maxLength": 64,
                "description": "IANA time zone the periods follow; checked by the operator",
            },
            "thresholds": {
                "type": "array",
                "description": "soft alerts in percent of the limit; the hard limit is 100",
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
            },
            "failureMode": {
                "type": "string",
                "enum": [mode.value for mode in FailureMode],
                "default": FailureMode.OPEN.value,
            },
            "failOpenLimit": _amount(
                "with failureMode Open: the most each webhook replica lets through on this "
                "budget during one ledger outage, in USD; past it the budget fails closed "
                f"(default: {DEFAULT_FAIL_OPEN_PERCENT}% of the limit)",
                "failOpenLimit",
            ),
            "reservation": {
                "type": "string",
                "enum": [mode.value for mode in Reservation],
                "default": Reservation.ESTIMATE.value,
                "description": "what a request reserves before its call: Estimate (its "
                "output cap, or the model's typical output when it sets none; a settlement "
                "above the estimate can end past the limit) or WorstCase (the model's "
                "maximum output when it sets none: the limit holds exactly, denials come "
                "earlier)",
            },
            "onSoftLimit": {
                "type": "object",
                "properties": {
                    "degradeModels": {
                        "type": "object",
                        "description": "model: cheaper model, suggested past the first threshold",
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
                "description": "seasonal multipliers of the limit by month of the period's start",
                "maxItems": 12,
                "items": {
                    "type": "object",
                    "required": ["months", "multiplier"],
                    "properties": {
                        "months": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 12,
                            "items": {"type": "integer", "minimum": 1, "maximum": 12},
                        },
                        "multiplier": {
                            "type": "string",
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
            "upgradeURL": {
                "type": "string",
                "maxLength": 2048,
                "x-kubernetes-validations": [
                    _rule(_matches("^https?://"), "upgradeURL must be an http(s) URL")
                ],
            },
            "alerts": {
                "type": "object",
                "description": "where threshold crossings are also sent",
                "required": ["secretRef"],
                "properties": {
                    "secretRef": {
                        "type": "object",
                        "description": "a Secret in this namespace holding the webhook URL",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "key": {"type": "string", "default": "url"},
                        },
                    },
                    "format": {
                        "type": "string",
                        "enum": ["Slack", "Generic"],
                        "default": "Generic",
                    },
                },
            },
        },
    }


def _burst_spec() -> dict[str, Any]:
    return {
        "type": "object",
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
                "description": "the LLMBudget, in this namespace, that the pool extends",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },
            "amount": _amount("the extra money, in USD", "amount"),
            "validFrom": {"type": "string", "format": "date-time"},
            "validUntil": {"type": "string", "format": "date-time"},
            "approvedBy": {
                "type": "string",
                "maxLength": 253,
                "x-kubernetes-validations": [
                    _rule(
                        "self.trim().size() > 0",
                        "approvedBy must name who approved the burst",
                    )
                ],
            },
            "reason": {"type": "string", "maxLength": 1024},
            "maxRequestCost": _amount(
                "no single request draws more than this from the pool, in USD", "maxRequestCost"
            ),
        },
    }


_CONDITION = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}


def _status(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": {
                "type": "array",
                "items": _CONDITION,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            **extra,
        },
    }


def _budget_status() -> dict[str, Any]:
    text = {"type": "string"}
    return _status(
        {
            "state": text,
            "scopeSummary": text,
            "periodKey": text,
            "periodStart": {"type": "string", "format": "date-time"},
            "resetsAt": {"type": "string", "format": "date-time"},
            "effectiveLimit": text,
            "spent": text,
            "reserved": text,
            "remaining": text,
            "utilization": text,
            "utilizationPercent": text,
            "users": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "burstPools": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    )


def _burst_status() -> dict[str, Any]:
    text = {"type": "string"}
    return _status(
        {
            "phase": {"type": "string", "enum": ["Pending", "Active", "Exhausted", "Expired"]},
            "spent": text,
            "remaining": text,
            "requests": {"type": "integer"},
            "review": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }
    )


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
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
            _column("Status", ".status.state"),
            _column("Resets", ".status.resetsAt"),  # a "date" column shows <invalid> ahead
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
            _column("Valid From", ".spec.validFrom", "date"),
            _column("Valid Until", ".spec.validUntil", "date"),
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
