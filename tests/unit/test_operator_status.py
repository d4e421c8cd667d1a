"""What the operator writes, given what it knows: conditions, spend fields, phases,
and the once-only markers' inputs. Pure: no services."""

from __future__ import annotations

import datetime as dt
from typing import Any

from budget_guard.domain.money import parse_usd
from budget_guard.operator import conditions as c
from budget_guard.operator.alerts import Alert, payload
from budget_guard.operator.compile import compile_resources
from budget_guard.operator.status import (
    AlertState,
    budget_status,
    burst_status,
    changed,
    ledger_unavailable_status,
    pool_phase,
    threshold_reached,
)
from budget_guard.store.usage import BudgetUsage, PoolUsage
from tests.factories import budget_manifest, burst_manifest

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def llmbudget(name: str, limit: str = "10", generation: int = 1, **spec: Any) -> dict[str, Any]:
    spec.setdefault("created", "2026-11-01T00:00:00Z")
    return budget_manifest(
        name, limit, namespace="team", uid=f"uid-{name}", generation=generation, **spec
    )


def burstbudget(name: str, budget_name: str, **spec: Any) -> dict[str, Any]:
    made = burst_manifest(
        name,
        budget_name,
        "5",
        "2026-11-27T00:00:00Z",
        "2026-11-30T00:00:00Z",
        namespace="team",
        approvedBy="cfo@example.com",
        **spec,
    )
    made["metadata"] |= {"uid": f"uid-{name}", "generation": 1}
    return made


def conditions_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cond["type"]: cond for cond in status["conditions"]}


def usage_of(compiled: Any, key: str, used: str) -> BudgetUsage:
    budget = compiled.budgets[key]
    window = budget.window(NOW)
    amount = parse_usd(used, "used", allow_zero=True)
    return BudgetUsage(budget, window, budget.effective_limit(window), used=amount, spent=amount)


def test_a_published_budget_is_ready_and_reports_spend() -> None:
    compiled = compile_resources([llmbudget("acme", scope={"tenant": "acme"})], [])
    key = "team/acme"
    usage = usage_of(compiled, key, "8.5")
    status = budget_status(key, compiled, {key: 1}, usage, None, NOW)
    conds = conditions_of(status)
    assert conds[c.ACCEPTED]["status"] == "True"
    assert conds[c.ENFORCED]["status"] == conds[c.READY]["status"] == "True"
    assert conds[c.SOFT_LIMIT_REACHED]["reason"] == "Threshold80Reached"
    assert conds[c.EXHAUSTED]["status"] == "False"
    assert {cond["observedGeneration"] for cond in conds.values()} == {1}
    assert status["spent"] == "8.50"
    assert status["remaining"] == "1.50"
    assert status["utilizationPercent"] == "85.0%"
    assert (status["state"], status["summary"]) == ("SoftLimit", "SoftLimit 80%")
    assert status["thresholdReached"] == 80
    assert status["resetsAt"] == "2026-12-01T00:00:00Z"
    assert status["periodKey"] == "2026-11"


def test_a_new_generation_is_not_ready_until_published() -> None:
    compiled = compile_resources([llmbudget("acme", generation=2)], [])
    status = budget_status("team/acme", compiled, {"team/acme": 1}, None, None, NOW)
    conds = conditions_of(status)
    assert conds[c.ACCEPTED]["status"] == "True"
    assert conds[c.ENFORCED]["status"] == "False"
    assert conds[c.ENFORCED]["reason"] == c.NOT_PUBLISHED
    assert conds[c.READY]["observedGeneration"] == 2
    assert status["state"] == "Pending"


def test_problems_name_the_fix_and_leave_the_others_alone() -> None:
    compiled = compile_resources(
        [
            llmbudget("older", created="2026-11-01T00:00:00Z", scope={"tenant": "a"}),
            llmbudget("newer", created="2026-11-02T00:00:00Z", scope={"tenant": "a"}),
            llmbudget("mars", scope={"tenant": "m"}, timeZone="Mars/Olympus_Mons"),
            {
                **llmbudget("leaving"),
                "metadata": {
                    **llmbudget("leaving")["metadata"],
                    "deletionTimestamp": "2026-11-28T00:00:00Z",
                },
            },
        ],
        [burstbudget("orphan", "nowhere")],
    )
    assert sorted(compiled.budgets) == ["team/older"]
    assert "team/leaving" not in compiled.manifests  # being deleted: out of the config
    assert compiled.problems["team/newer"].reason == c.DUPLICATE_SCOPE
    assert compiled.problems["team/mars"].reason == c.INVALID_TIME_ZONE
    assert "Mars/Olympus_Mons" in compiled.problems["team/mars"].message
    assert compiled.problems["team/orphan"].reason == c.BUDGET_NOT_FOUND
    rejected = budget_status("team/newer", compiled, {}, None, None, NOW)
    assert conditions_of(rejected)[c.ACCEPTED]["reason"] == c.DUPLICATE_SCOPE
    assert rejected["state"] == "Rejected"
    published, bursts = compiled.publishable()
    assert [m["metadata"]["name"] for m in published] == ["older"]
    assert bursts == []


def test_transition_times_stay_while_a_condition_holds() -> None:
    compiled = compile_resources([llmbudget("acme")], [])
    first = budget_status("team/acme", compiled, {"team/acme": 1}, None, None, NOW)
    later = NOW + dt.timedelta(hours=1)
    manifest = {**compiled.manifests["team/acme"], "status": first}
    recompiled = compile_resources([manifest], [])
    again = budget_status("team/acme", recompiled, {"team/acme": 1}, None, None, later)
    assert conditions_of(again)[c.READY]["lastTransitionTime"] == c.rfc3339(NOW)
    assert not changed(first, again)  # nothing to write
    unpublished = budget_status("team/acme", recompiled, {}, None, None, later)
    assert conditions_of(unpublished)[c.READY]["lastTransitionTime"] == c.rfc3339(later)
    assert changed(first, unpublished)


def test_alerts_condition_and_payloads() -> None:
    compiled = compile_resources([llmbudget("acme", alerts={"secretRef": {"name": "s"}})], [])
    missing = AlertState(False, c.SECRET_NOT_FOUND, "Secret team/s does not exist")
    status = budget_status("team/acme", compiled, {"team/acme": 1}, None, missing, NOW)
    assert conditions_of(status)[c.ALERTS_READY]["reason"] == c.SECRET_NOT_FOUND
    alert = Alert("team/acme", c.EVENT_SOFT_LIMIT, "80% reached", {"threshold": 80})
    assert payload(alert, "Slack") == {
        "text": ":warning: *SoftLimitReached* — team/acme: 80% reached"
    }
    assert payload(alert, "Generic") == {
        "budget": "team/acme",
        "reason": "SoftLimitReached",
        "message": "80% reached",
        "threshold": 80,
    }


def test_the_threshold_reached_is_written_as_a_number() -> None:
    compiled = compile_resources([llmbudget("acme", scope={"tenant": "acme"})], [])
    key = "team/acme"

    def written(used: str) -> dict[str, Any]:
        return dict(
            budget_status(key, compiled, {key: 1}, usage_of(compiled, key, used), None, NOW)
        )

    below, soft, over = written("1"), written("9.1"), written("10.2")
    assert [threshold_reached(s) for s in (below, soft, over, {})] == [0, 90, 100, 0]
    assert [s["state"] for s in (below, soft, over)] == ["Ok", "SoftLimit", "Exhausted"]
    assert [s["summary"] for s in (below, soft, over)] == ["Ok", "SoftLimit 90%", "Exhausted"]


def test_burst_phases_and_status() -> None:
    compiled = compile_resources([llmbudget("acme")], [burstbudget("extra", "acme")])
    pool = compiled.pools["team/extra"]
    assert pool_phase(pool, None, dt.datetime(2026, 11, 26, tzinfo=dt.UTC)) == "Pending"
    assert pool_phase(pool, None, NOW) == "Active"
    assert pool_phase(pool, None, dt.datetime(2026, 12, 1, tzinfo=dt.UTC)) == "Expired"
    spent = PoolUsage(
        pool, used=5_000_000, spent=5_000_000, requests=3, activated_at_ms=1, exhausted_at_ms=None
    )
    assert pool_phase(pool, spent, NOW) == "Exhausted"
    status = burst_status("team/extra", compiled, spent, {"spent": "5.00"}, NOW)
    assert status["phase"] == "Exhausted"
    assert status["remaining"] == "0.00"
    assert status["requests"] == 3
    assert status["review"] == {"spent": "5.00"}


def test_an_unreachable_ledger_is_said_on_the_budget_and_validation_still_runs() -> None:
    good, bad = llmbudget("acme"), llmbudget("broken", limit="-1")
    compiled = compile_resources([good, bad], [])
    message = "the ledger (Redis at redis://:***@nowhere:6379/0) cannot be reached: refused"
    status = ledger_unavailable_status("team/acme", compiled, message, NOW)
    by_type = {cond["type"]: cond for cond in status["conditions"]}
    assert (by_type[c.ACCEPTED]["status"], by_type[c.ACCEPTED]["reason"]) == ("True", c.VALID)
    for kind in (c.ENFORCED, c.READY):
        assert by_type[kind]["status"] == "False"
        assert by_type[kind]["reason"] == c.LEDGER_UNAVAILABLE == "LedgerUnavailable"
        assert by_type[kind]["message"] == message
    assert status["summary"] == "LedgerUnavailable"  # the Status column
    assert status["state"] == "Pending"
    rejected = ledger_unavailable_status("team/broken", compiled, message, NOW)
    accepted = rejected["conditions"][0]
    assert (accepted["type"], accepted["status"]) == (c.ACCEPTED, "False")
    assert rejected["state"] == "Rejected"
