"""Event names: the same notice always gets the same valid name; different notices
different names; the body names the object."""

from __future__ import annotations

import datetime as dt
import re

from budget_guard.operator.alerts import Alert, payload
from budget_guard.operator.events import Announcement, event_body, event_name

VALID_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MANIFEST = {
    "apiVersion": "budgetguard.io/v1alpha1",
    "kind": "LLMBudget",
    "metadata": {"name": "acme", "namespace": "team", "uid": "0b1c-uid"},
}


def test_the_same_notice_gets_the_same_name_and_others_differ() -> None:
    first = event_name(MANIFEST, "SoftLimitReached", "0b1c-uid:2026-12::soft_limit:80")
    again = event_name(MANIFEST, "SoftLimitReached", "0b1c-uid:2026-12::soft_limit:80")
    other_threshold = event_name(MANIFEST, "SoftLimitReached", "0b1c-uid:2026-12::soft_limit:90")
    other_period = event_name(MANIFEST, "SoftLimitReached", "0b1c-uid:2027-01::soft_limit:80")
    other_user = event_name(MANIFEST, "SoftLimitReached", "0b1c-uid:2026-12:bob:soft_limit:80")
    assert first == again
    assert len({first, other_threshold, other_period, other_user}) == 4
    assert first.startswith("acme.") and VALID_NAME.match(first)


def test_a_long_object_name_still_gives_a_valid_name() -> None:
    long = {**MANIFEST, "metadata": {**MANIFEST["metadata"], "name": "a" * 253}}
    name = event_name(long, "BudgetExhausted", "key")
    assert len(name) <= 253 and VALID_NAME.match(name)


def test_the_body_names_the_object_and_cuts_long_messages() -> None:
    said = Announcement(MANIFEST, "Warning", "BudgetExhausted", "x" * 5000, "k")
    body = event_body(said, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    assert body["metadata"] == {"name": said.name, "namespace": "team"}
    assert body["involvedObject"]["uid"] == "0b1c-uid"
    assert body["involvedObject"]["kind"] == "LLMBudget"
    assert len(body["message"]) == 1024
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "BudgetExhausted", 1)


def test_an_alert_carries_the_event_name_as_its_id() -> None:
    alert = Alert("team/acme", "BudgetExhausted", "spent", {"period": "2026-12"}, id="acme.0f")
    assert payload(alert, "Generic")["id"] == "acme.0f"
    assert "id" not in payload(Alert("team/acme", "BudgetExhausted", "spent", {}), "Generic")
