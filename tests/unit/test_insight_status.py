"""What the status says of the history: the forecast and its condition, the anomaly
condition, the review figures and committed use; and the new spec fields' parsing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from budget_guard.domain.anomaly import Anomaly
from budget_guard.domain.manifest import ManifestError, parse_budget
from budget_guard.domain.review import build_review
from budget_guard.operator import conditions as c
from budget_guard.operator.compile import compile_resources
from budget_guard.operator.status import Insight, budget_status, review_from_status
from budget_guard.store.usage import BudgetUsage
from tests.factories import budget_manifest

NOW = dt.datetime(2026, 11, 11, 0, 0, tzinfo=dt.UTC)
USD = 1_000_000
QUIET = Anomaly(False, baseline_days=7, message="usual")


def status_for(limit: str, per_day: int, anomaly: Anomaly = QUIET, **spec: Any) -> dict[str, Any]:
    manifest = budget_manifest("team", limit, namespace="ns", uid="u", generation=1, **spec)
    compiled = compile_resources([manifest], [])
    budget = compiled.budgets["ns/team"]
    window = budget.window(NOW)
    days = {dt.date(2026, 10, 1) + dt.timedelta(days=n): per_day for n in range(41)}
    spent = per_day * 10
    usage = BudgetUsage(budget, window, budget.effective_limit(window), used=spent, spent=spent)
    review = build_review(
        budget, days, NOW, allocated_micros=usage.effective_limit, spent_micros=spent
    )
    status = budget_status(
        "ns/team", compiled, {"ns/team": 1}, usage, None, NOW, Insight(review, anomaly)
    )
    return dict(status)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(cond for cond in status["conditions"] if cond["type"] == kind)


def test_a_forecast_past_the_limit_sets_the_condition_with_the_projected_date() -> None:
    status = status_for("250", 10 * USD)
    forecast = condition(status, c.FORECAST_EXCEEDS_LIMIT)
    assert (forecast["status"], forecast["reason"]) == ("True", c.PROJECTED_OVER_LIMIT)
    assert forecast["message"] == (
        "projected to reach the $250.00 limit on 2026-11-25, 5 days before the period ends: "
        "$300.00 by 2026-11-30 (28 days)"
    )
    assert status["forecast"] == {
        "summary": "$300.00, limit on 2026-11-25",
        "spend": "300.00",
        "limitDate": "2026-11-25",
        "basis": "28 days",
    }
    assert status["review"]["action"] == "request +$50"
    assert status["review"]["trend"] == "flat"
    assert (
        status["review"]["days"][:2] == ["10.00", "10.00"] and len(status["review"]["days"]) == 11
    )


def test_a_forecast_within_the_limit_says_so() -> None:
    status = status_for("1000", 10 * USD)
    forecast = condition(status, c.FORECAST_EXCEEDS_LIMIT)
    assert (forecast["status"], forecast["reason"]) == ("False", c.PROJECTED_WITHIN_LIMIT)
    assert status["forecast"]["summary"] == "$300.00"
    assert status["review"]["action"] == "OK"


def test_too_little_history_is_no_forecast_and_says_why() -> None:
    status = status_for("1000", 0)
    forecast = condition(status, c.FORECAST_EXCEEDS_LIMIT)
    assert (forecast["status"], forecast["reason"]) == ("False", c.INSUFFICIENT_HISTORY)
    assert status["forecast"]["summary"] == "n/a"
    assert "too little history to forecast" in status["forecast"]["message"]


def test_the_anomaly_condition_follows_the_check() -> None:
    jump = Anomaly(True, "hour", 40 * USD, 4 * USD, 7, "$40.00 spent in the last hour")
    found = condition(status_for("1000", 10 * USD, jump), c.ANOMALY_DETECTED)
    assert (found["status"], found["reason"]) == ("True", c.SPEND_JUMP)
    quiet = condition(status_for("1000", 10 * USD), c.ANOMALY_DETECTED)
    assert (quiet["status"], quiet["reason"]) == ("False", c.USUAL_SPEND)
    young = condition(
        status_for("1000", 10 * USD, Anomaly(False, baseline_days=1)), c.ANOMALY_DETECTED
    )
    assert young["reason"] == c.INSUFFICIENT_BASELINE


def test_committed_use_is_reported() -> None:
    status = status_for("1000", 10 * USD, commitment={"amount": "400", "discountPercent": "20"})
    assert status["commitment"] == {
        "amount": "400.00",
        "used": "100.00",
        "utilization": "25.0 %",
        "discount": "20.00",
        "summary": "25.0 % of $400.00; $100.00 projected unused",
        "projectedUnused": "100.00",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"commitment": {"discountPercent": "5"}}, "spec.commitment.amount: is required"),
        ({"commitment": {"amount": "0"}}, "spec.commitment.amount: must be positive"),
        (
            {"commitment": {"amount": "5", "discountPercent": "100"}},
            "spec.commitment.discountPercent: must be a percentage from 0 to below 100",
        ),
        (
            {"commitment": {"amount": "5", "discount": "10"}},
            "spec.commitment.discount: unknown field; use amount, discountPercent",
        ),
        ({"anomaly": {"factor": 1}}, "spec.anomaly.factor: must be a whole number from 2 to 1000"),
        ({"anomaly": {"factor": "10"}}, "spec.anomaly.factor: must be a whole number"),
    ],
)
def test_bad_commitments_and_anomaly_factors_name_the_field(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestError, match=message.replace("$", r"\$")):
        parse_budget(budget_manifest("x", "10", **spec))


def test_commitment_and_anomaly_factor_are_parsed() -> None:
    parsed = parse_budget(
        budget_manifest(
            "x",
            "10",
            commitment={"amount": "5000", "discountPercent": "12.5"},
            anomaly={"factor": 4},
        )
    )
    assert parsed.commitment is not None
    assert parsed.commitment.amount_micros == 5000 * USD
    assert str(parsed.commitment.discount_percent) == "12.5"
    assert parsed.anomaly_factor == 4
    assert parse_budget(budget_manifest("y", "10")).anomaly_factor == 10


def test_the_review_read_back_from_a_status_is_the_one_written() -> None:
    manifest = budget_manifest(
        "team", "250", namespace="ns", uid="u", generation=1, commitment={"amount": "400"}
    )
    compiled = compile_resources([manifest], [])
    budget = compiled.budgets["ns/team"]
    window = budget.window(NOW)
    days = {dt.date(2026, 10, 1) + dt.timedelta(days=n): 10 * USD for n in range(41)}
    usage = BudgetUsage(budget, window, 250 * USD, used=100 * USD, spent=100 * USD)
    written = build_review(budget, days, NOW, allocated_micros=250 * USD, spent_micros=100 * USD)
    status = budget_status("ns/team", compiled, {"ns/team": 1}, usage, None, NOW,
                           Insight(written, QUIET))  # fmt: skip
    read = review_from_status(budget, dict(status))
    assert read is not None
    assert read.history == written.history
    assert (read.allocated_micros, read.spent_micros) == (250 * USD, 100 * USD)
    assert read.forecast is not None and written.forecast is not None
    assert read.forecast.projected_micros == written.forecast.projected_micros
    assert read.forecast.limit_day == written.forecast.limit_day
    assert read.forecast.last_day == written.forecast.last_day
    assert (read.trend, read.action, read.commitment_use) == (
        written.trend,
        written.action,
        written.commitment_use,
    )
    assert review_from_status(budget, {"state": "Pending"}) is None
